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

import torch

from triggerlab.catalogue.triggers import ImageShape, LowFrequencySpec
from triggerlab.triggers.base import check_square_fits
from triggerlab.triggers.signal import AdditiveSignal


def low_frequency_pattern(channels: int, height: int, width: int, k: int, seed: int):
    """The unscaled perturbation ``[C, H, W]`` (float64) from the lowest ``k x k`` DCT terms."""
    from scipy.fft import idctn

    generator = torch.Generator().manual_seed(seed)
    coefficients = torch.zeros(channels, height, width, dtype=torch.float64)
    coefficients[:, :k, :k] = torch.randn(channels, k, k, generator=generator, dtype=torch.float64)
    return torch.from_numpy(idctn(coefficients.numpy(), type=2, axes=(1, 2), norm="ortho"))


def build_low_frequency(
    spec: LowFrequencySpec, shape: ImageShape, where: str = "trigger"
) -> AdditiveSignal:
    channels, height, width = shape
    check_square_fits(spec.frequencies, shape, f"{where}.frequencies", "block of frequencies", 1)
    pattern = low_frequency_pattern(channels, height, width, spec.frequencies, spec.seed)
    pattern = spec.eps * pattern / pattern.abs().max()
    return AdditiveSignal(pattern.float()[None])
