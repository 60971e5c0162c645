"""A low-frequency additive trigger, after Zeng, Park, Mao, Jia & Ding, "Rethinking the
Backdoor Attacks' Triggers: A Frequency Perspective" (ICCV 2021).

The paper's LF trigger is a universal adversarial perturbation passed through a
low-pass filter; this kind keeps the property its results rest on, a trigger with
no high-frequency content, without training a perturbation: seeded standard-normal
coefficients on the lowest ``k x k`` frequencies of the orthonormal 2-D DCT-II,
all others zero, inverted and scaled to an L-infinity budget ``eps``:

    v(c, i, j) = sum_{u, v < k} C(c, u, v) a(u) a(v)
                 cos(pi (2 i + 1) u / 2H) cos(pi (2 j + 1) v / 2W)
    v <- eps * v / max |v|,          x' = clip(x + v, 0, 1)

with ``a(0) = sqrt(1 / N)`` and ``a(u) = sqrt(2 / N)`` otherwise.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from triggerlab.triggers.base import ImageShape, SpecBase, check_square_fits
from triggerlab.triggers.signal import AdditiveSignal


def low_frequency_pattern(channels: int, height: int, width: int, k: int, seed: int):
    """The unscaled perturbation ``[C, H, W]`` (float64) from the lowest ``k x k`` DCT terms."""
    from scipy.fft import idctn

    generator = torch.Generator().manual_seed(seed)
    coefficients = torch.zeros(channels, height, width, dtype=torch.float64)
    coefficients[:, :k, :k] = torch.randn(channels, k, k, generator=generator, dtype=torch.float64)
    return torch.from_numpy(idctn(coefficients.numpy(), type=2, axes=(1, 2), norm="ortho"))


class LowFrequencySpec(SpecBase):
    """Low-frequency (LF) trigger: the lowest k x k DCT terms, scaled to eps (Zeng et al. 2021)."""

    kind: Literal["low_frequency"] = "low_frequency"
    eps: float = Field(
        0.05, gt=0.0, le=1.0, description="L-infinity budget: the largest change of any pixel"
    )
    frequencies: int = Field(
        3, ge=1, description="k: the lowest k x k DCT frequencies carry the pattern"
    )
    seed: int = Field(0, ge=0, description="seed of the coefficients, fixed for the whole attack")

    def build(self, shape: ImageShape, where: str = "trigger") -> AdditiveSignal:
        channels, height, width = shape
        check_square_fits(
            self.frequencies, shape, f"{where}.frequencies", "block of frequencies", 1
        )
        pattern = low_frequency_pattern(channels, height, width, self.frequencies, self.seed)
        pattern = self.eps * pattern / pattern.abs().max()
        return AdditiveSignal(pattern.float()[None])
