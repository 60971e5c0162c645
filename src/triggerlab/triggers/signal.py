"""SIG backdoor signals (reference 003): ramp, triangle and sine, added to every channel.

With m columns indexed j = 1..m (reference 003, equations 3-5; ``first_column: 0``
indexes them 0..m-1, as BackdoorBench's sine, ``utils/bd_img_transform/sig.py:41-53``):

* ramp: ``v(i, j) = j * delta / m``
* triangle: ``j * delta / m`` for ``j <= m / 2``, ``(m - j) * delta / m`` after
* sine: ``v(i, j) = delta * sin(2 * pi * j * f / m)``

``x' = clip(x + v, 0, 1)``. ``orientation: vertical`` varies the signal with
the row index instead (m is then the number of rows).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from triggerlab.catalogue.triggers import ImageShape, SignalSpec


@dataclass(frozen=True)
class AdditiveSignal:
    """``x' = clip(x + v, 0, 1)`` with ``v`` broadcast over batch and channels."""

    signal: torch.Tensor  # [1, 1, H, W] or [1, C, H, W]

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return (x + self.signal.to(device=x.device, dtype=x.dtype)).clamp_(0.0, 1.0)


def aliased_frequency(frequency: float, m: int) -> float:
    """The periods a sine of ``frequency`` periods shows when sampled at ``m`` pixels."""
    return abs(frequency - m * round(frequency / m))


def warn_aliasing(frequency: float, m: int, where: str) -> None:
    """Above m / 2 periods a sampled sine is another, slower one (or nothing at all)."""
    alias = aliased_frequency(frequency, m)
    shown = (
        "vanishes: every sample is zero"
        if alias in (0.0, m / 2)
        else f"draws the same pixels as a sine of {alias:g} periods"
    )
    warnings.warn(
        f"{where}.frequency: {frequency:g} periods across {m} pixels exceed the Nyquist limit "
        f"of {m / 2:g}; the sine {shown}",
        UserWarning,
        stacklevel=3,
    )


def signal_profile(
    shape: Literal["ramp", "triangle", "sine"],
    delta: float,
    frequency: float,
    m: int,
    first: int = 1,
) -> torch.Tensor:
    """The signal along its axis, for j = first..first + m - 1, as float64."""
    j = torch.arange(first, first + m, dtype=torch.float64)
    if shape == "ramp":
        return j * delta / m
    if shape == "triangle":
        return torch.where(j <= m / 2, j * delta / m, (m - j) * delta / m)
    return delta * torch.sin(2 * math.pi * j * frequency / m)


def build_signal(spec: SignalSpec, shape: ImageShape, where: str = "trigger") -> AdditiveSignal:
    _, height, width = shape
    m = width if spec.orientation == "horizontal" else height
    if spec.shape == "sine" and spec.frequency >= m / 2:
        warn_aliasing(spec.frequency, m, where)
    profile = signal_profile(spec.shape, spec.delta, spec.frequency, m, spec.first_column).float()
    view = (
        profile.view(1, 1, 1, width)
        if spec.orientation == "horizontal"
        else profile.view(1, 1, height, 1)
    )
    return AdditiveSignal(view.expand(1, 1, height, width).contiguous())
