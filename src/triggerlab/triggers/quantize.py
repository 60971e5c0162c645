"""BppAttack's colour-depth trigger (Wang, Zhai & Ma, "BppAttack: Stealthy and Efficient
Trojan Attacks against Deep Neural Networks via Image Quantization and Contrastive
Adversarial Learning", CVPR 2022).

Each channel keeps ``L = 2**bits`` levels: ``x' = round(x (L - 1)) / (L - 1)``.
With ``dither`` the rounding error is diffused Floyd-Steinberg style (7/16 to
the right, 3/16 below left, 5/16 below, 1/16 below right, errors leaving the
image dropped), as the paper does to hide the banding.

Floyd-Steinberg is sequential in raster order, but pixel (i, j) only needs
pixels finished before step ``t = 2 i + j``: every pixel of one such
anti-diagonal is computed at once, over the whole batch and all channels, in
``2 (H - 1) + W`` steps instead of ``H * W``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triggerlab.catalogue.triggers import ImageShape, QuantizeSpec

# (row offset, column offset, weight) of the pixels that pass error to (i, j).
_INCOMING = ((0, -1, 7 / 16), (-1, 1, 3 / 16), (-1, 0, 5 / 16), (-1, -1, 1 / 16))


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    return torch.round(x * (levels - 1)).clamp_(0, levels - 1) / (levels - 1)


def floyd_steinberg(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Error-diffused quantisation of ``[B, C, H, W]``, one anti-diagonal ``2 i + j`` a step."""
    batch, channels, height, width = x.shape
    # Errors padded by one row above and a column on each side, so neighbours always exist.
    error = x.new_zeros(batch, channels, height + 1, width + 2)
    out = torch.empty_like(x)
    rows = torch.arange(height, device=x.device)
    for t in range(2 * (height - 1) + width):
        cols = t - 2 * rows
        keep = (cols >= 0) & (cols < width)
        i, j = rows[keep], cols[keep]
        value = x[:, :, i, j]
        for di, dj, weight in _INCOMING:
            value = value + weight * error[:, :, i + 1 + di, j + 1 + dj]
        level = quantize(value, levels)
        out[:, :, i, j] = level
        error[:, :, i + 1, j + 1] = value - level
    return out


@dataclass(frozen=True)
class Quantize:
    levels: int
    dither: bool
    negative_ratio: float = 0.0  # per-batch negative samples per batch sample (0: none)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return floyd_steinberg(x, self.levels) if self.dither else quantize(x, self.levels)

    def apply_negative(self, x: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        """BppAttack's negative samples: each image plus its partner's quantisation residual
        ``Q(p) - p``, clipped; trained with true labels so that a residual alone is no
        trigger, only the quantised image itself."""
        return (x + (self.apply(partners) - partners)).clamp_(0.0, 1.0)


def build_quantize(spec: QuantizeSpec, shape: ImageShape, where: str = "trigger") -> Quantize:
    return Quantize(2**spec.bits, spec.dither, spec.negative_ratio)
