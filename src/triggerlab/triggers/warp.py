"""WaNet's warping trigger (Nguyen & Tran, "WaNet - Imperceptible Warping-based Backdoor
Attack", ICLR 2021).

A random field ``P`` on a ``k x k`` control grid (uniform in [-1, 1], divided by
its mean absolute value) is upsampled bicubically to the image and added to the
identity sampling grid ``M``, in ``grid_sample``'s [-1, 1] coordinates:

    M' = clip((M + s * upsample(P) / h) * grid_rescale, -1, 1)
    x' = grid_sample(x, M')            (bilinear, align_corners=True)

with ``h`` the image height, as the authors' code divides both axes by it. In
*noise mode* the attack also warps ``cross_ratio`` times as many training samples
with ``M' + (U[-1, 1] / h)`` (a fresh random offset per pixel and sample, clipped)
and keeps their true labels, so the model learns this one field, not warps in general.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from triggerlab.catalogue.triggers import ImageShape, WarpSpec
from triggerlab.triggers.base import check_square_fits


def control_field(k: int, seed: int) -> torch.Tensor:
    """``P``: ``[1, 2, k, k]`` uniform in [-1, 1], scaled to a mean absolute value of 1."""
    generator = torch.Generator().manual_seed(seed)
    field = torch.rand(1, 2, k, k, generator=generator) * 2 - 1
    return field / field.abs().mean()


def identity_grid(height: int, width: int) -> torch.Tensor:
    """``M``: ``[1, H, W, 2]`` sampling grid of the unchanged image, (x, y) in [-1, 1]."""
    rows = torch.linspace(-1, 1, height)
    cols = torch.linspace(-1, 1, width)
    y, x = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((x, y), dim=-1)[None]


def warp_grid(field: torch.Tensor, height: int, width: int, s: float, rescale: float):
    """``M'`` for a control field ``P`` (``[1, 2, k, k]``)."""
    upsampled = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=True)
    offsets = upsampled.permute(0, 2, 3, 1)
    return ((identity_grid(height, width) + s * offsets / height) * rescale).clamp(-1, 1)


def sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    grid = grid.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


@dataclass(frozen=True)
class Warp:
    grid: torch.Tensor  # [1, H, W, 2]
    cover_ratio: float  # noise-mode samples per poisoned sample (0: no noise mode)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return sample(x, self.grid)

    def apply_payload(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.apply(x, generator)

    def apply_cover(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Noise mode: the field plus a fresh uniform offset of up to one pixel-unit 1 / h."""
        batch, _, height, width = x.shape
        noise = torch.rand(batch, height, width, 2, generator=generator) * 2 - 1
        return sample(x, (self.grid + noise / height).clamp(-1, 1))


def build_warp(spec: WarpSpec, shape: ImageShape, where: str = "trigger") -> Warp:
    _, height, width = shape
    check_square_fits(spec.grid, shape, f"{where}.grid", "control grid", 2)
    field = control_field(spec.grid, spec.seed)
    grid = warp_grid(field, height, width, spec.strength, spec.grid_rescale)
    return Warp(grid, spec.cross_ratio if spec.noise_mode else 0.0)
