"""Full-image triggers: a frame, evenly spaced lines, and a blended pattern (noise or image)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Literal

import torch

from triggerlab.catalogue.geometry import resolve_size
from triggerlab.catalogue.triggers import (
    BlendSpec,
    FrameSpec,
    ImageShape,
    LinesSpec,
)
from triggerlab.errors import ConfigError
from triggerlab.triggers.base import Overlay
from triggerlab.triggers.colors import color_tensor, rgb_to_channels
from triggerlab.triggers.stamp import load_rgba


def build_frame(spec: FrameSpec, shape: ImageShape, where: str = "trigger") -> Overlay:
    channels, height, width = shape
    t = resolve_size(spec.thickness, height, width)
    limit = (min(height, width) - 1) // 2
    if t > limit:
        raise ConfigError(
            f"{where}.thickness: a {t}-pixel frame covers the whole {height}x{width} image "
            f"(expected 1 to {limit} pixels)"
        )
    mask = torch.ones(1, height, width)
    mask[:, t : height - t, t : width - t] = 0.0
    return Overlay(color_tensor(spec.color, channels), mask, spec.opacity)


def line_starts(count: int, thickness: int, length: int) -> list[int]:
    """First pixel of each of ``count`` lines centred at ``c_k = (k + 0.5) * length / count``.

    ``floor(c_k - thickness / 2 + 0.5)``: the band's start rounded half up, as
    sizes are. Lines stay separate when consecutive starts lie more than
    ``thickness`` apart (``lines_stay_apart``).
    """
    return [
        min(
            max(math.floor((k + 0.5) * length / count - thickness / 2 + 0.5), 0), length - thickness
        )
        for k in range(count)
    ]


def lines_stay_apart(count: int, thickness: int, length: int) -> bool:
    """Whether every line keeps at least one untouched pixel before the next one."""
    starts = line_starts(count, thickness, length)
    return all(b - a > thickness for a, b in itertools.pairwise(starts))


def bands(profile: torch.Tensor) -> int:
    """Runs of drawn pixels in a 0/1 profile: what an observer counts as lines."""
    drawn = profile > 0
    return int(drawn[0]) + int((drawn[1:] & ~drawn[:-1]).sum())


def build_lines(spec: LinesSpec, shape: ImageShape, where: str = "trigger") -> Overlay:
    channels, height, width = shape
    t = resolve_size(spec.thickness, height, width)
    across = width if spec.orientation == "vertical" else height
    if spec.count * t >= across:
        raise ConfigError(
            f"{where}.count: {spec.count} lines {t} pixel(s) thick do not fit across "
            f"{across} pixels (expected count x thickness < {across})"
        )
    profile = torch.zeros(across)
    for start in line_starts(spec.count, t, across):
        profile[start : start + t] = 1.0
    if not lines_stay_apart(spec.count, t, across):
        fitting = max(n for n in range(1, spec.count) if lines_stay_apart(n, t, across))
        raise ConfigError(
            f"{where}.count: {spec.count} lines {t} pixel(s) thick merge into "
            f"{bands(profile)} bands across {across} pixels; at most {fitting} stay "
            "separate at this resolution (each needs its thickness and a gap)"
        )
    mask = (
        profile.view(1, 1, width) if spec.orientation == "vertical" else profile.view(1, height, 1)
    )
    return Overlay(
        color_tensor(spec.color, channels),
        mask.expand(1, height, width).contiguous(),
        spec.opacity,
    )


def build_blend(spec: BlendSpec, shape: ImageShape, where: str = "trigger") -> Overlay:
    _, height, width = shape
    pattern = blend_pattern(spec.pattern, spec.path, spec.seed, shape, where)
    return Overlay(pattern, torch.ones(1, height, width), spec.opacity)


def blend_pattern(
    kind: Literal["noise", "image"], path: Path | None, seed: int, shape: ImageShape, where: str
) -> torch.Tensor:
    """``[C, H, W]``: seeded uniform noise, or the image at ``path`` resized to the input."""
    channels, height, width = shape
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(channels, height, width, generator=generator)
    assert path is not None
    rgba = load_rgba(path, (height, width), f"{where}.path")
    return rgb_to_channels(rgba[:3], channels)
