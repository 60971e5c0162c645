"""Patch and image triggers: a pattern blended into a square of the image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from triggerlab.catalogue.triggers import ImageShape, ImageSpec, PatchSpec
from triggerlab.errors import ConfigError
from triggerlab.triggers.colors import color_tensor, rgb_to_channels
from triggerlab.triggers.flower import flower_rgba


@dataclass(frozen=True)
class Stamp:
    """Blend ``pattern`` into the rectangle at (top, left): ``x' = (1 - w) x + w p``.

    ``w = opacity * mask`` per pixel; outside the rectangle the image is unchanged.
    With ``w = 1`` the result is exactly the pattern value.
    """

    pattern: torch.Tensor  # float [C, h, w] in [0, 1]
    mask: torch.Tensor  # float [1, h, w] in [0, 1]
    top: int
    left: int
    opacity: float

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = self.pattern.shape[-2:]
        out = x.clone()
        region = out[:, :, self.top : self.top + h, self.left : self.left + w]
        weight = (self.opacity * self.mask).to(device=x.device, dtype=x.dtype)
        pattern = self.pattern.to(device=x.device, dtype=x.dtype)
        region.copy_((1.0 - weight) * region + weight * pattern)
        return out


def build_patch(spec: PatchSpec, shape: ImageShape, where: str = "trigger") -> Stamp:
    side, top, left = spec.placement(shape, where)
    pattern = color_tensor(spec.color, shape[0]).expand(shape[0], side, side).contiguous()
    return Stamp(pattern, torch.ones(1, side, side), top, left, spec.opacity)


def build_image(spec: ImageSpec, shape: ImageShape, where: str = "trigger") -> Stamp:
    side, top, left = spec.placement(shape, where)
    rgba = flower_rgba(side) if spec.path is None else load_rgba(spec.path, side, f"{where}.path")
    pattern = rgb_to_channels(rgba[:3], shape[0])
    return Stamp(pattern, rgba[3:], top, left, spec.opacity)


def load_rgba(path: Path, size: int | tuple[int, int], where: str = "trigger.path") -> torch.Tensor:
    """Read an image as float RGBA ``[4, H, W]``, resized with premultiplied alpha.

    ``size`` is a side (square) or ``(H, W)``.
    """
    height, width = (size, size) if isinstance(size, int) else size
    try:
        with Image.open(path) as img:
            # Premultiplying before resampling keeps transparent pixels' colours out of edges.
            premultiplied = img.convert("RGBA").convert("RGBa")
            resized = premultiplied.resize((width, height), Image.Resampling.LANCZOS)
            rgba = resized.convert("RGBA")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read image file {path}: {exc}") from exc
    array = np.asarray(rgba, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
