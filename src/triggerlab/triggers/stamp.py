"""Patch and image triggers: a pattern blended into a square of the image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BeforeValidator, Field, model_validator

from triggerlab.errors import ConfigError
from triggerlab.triggers.base import ImageShape, SpecBase
from triggerlab.triggers.colors import ColorValue, color_tensor, parse_color, rgb_to_channels
from triggerlab.triggers.flower import flower_rgba
from triggerlab.triggers.geometry import (
    PositionValue,
    SizeValue,
    parse_position,
    parse_size,
    resolve_position,
    resolve_size,
)

Color = Annotated[ColorValue, BeforeValidator(parse_color)]
Size = Annotated[SizeValue, BeforeValidator(parse_size)]
Position = Annotated[PositionValue, BeforeValidator(parse_position)]

SIZE_HELP = "pixels (integer) or fraction of the shorter side (float in (0, 1])"
OPACITY_HELP = "blend weight a in (0, 1]: x' = (1 - a) x + a c"
COLOR_HELP = "name, grey level 0-255 or [R, G, B] 0-255; luminance on 1-channel images"


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


def fit_side(size: SizeValue, shape: ImageShape, where: str) -> int:
    """Side in pixels of a square trigger; ConfigError naming ``where`` if it exceeds the image."""
    _, height, width = shape
    side = resolve_size(size, height, width)
    if side > min(height, width):
        raise ConfigError(
            f"{where}: a {side}-pixel trigger does not fit a {height}x{width} image "
            f"(expected 1 to {min(height, width)} pixels)"
        )
    return side


def fit_position(
    position: PositionValue, side: int, margin: int, shape: ImageShape, where: str
) -> tuple[int, int]:
    _, height, width = shape
    top, left = resolve_position(position, (side, side), (height, width), margin)
    if top < 0 or left < 0 or top + side > height or left + side > width:
        raise ConfigError(
            f"{where}: a {side}x{side} trigger at {position} with margin {margin} "
            f"falls outside the {height}x{width} image"
        )
    return top, left


class PlacedSpec(SpecBase):
    """Fields shared by triggers stamped into a square of the image."""

    size: Size = Field(3, description=SIZE_HELP)
    position: Position = Field(
        "bottom_right", description="named position or [x, y] pixels of the top-left corner"
    )
    opacity: float = Field(1.0, gt=0.0, le=1.0, description=OPACITY_HELP)
    margin: int = Field(0, ge=0, description="pixels between a corner trigger and the border")

    def placement(self, shape: ImageShape, where: str = "trigger") -> tuple[int, int, int]:
        """``(side, top, left)`` on an image of ``shape``; ConfigError when it does not fit."""
        side = fit_side(self.size, shape, f"{where}.size")
        top, left = fit_position(self.position, side, self.margin, shape, f"{where}.position")
        return side, top, left


class PatchSpec(PlacedSpec):
    """BadNets square patch of one colour."""

    kind: Literal["patch"] = "patch"
    color: Color = Field("white", description=COLOR_HELP)

    def build(self, shape: ImageShape, where: str = "trigger") -> Stamp:
        side, top, left = self.placement(shape, where)
        pattern = color_tensor(self.color, shape[0]).expand(shape[0], side, side).contiguous()
        return Stamp(pattern, torch.ones(1, side, side), top, left, self.opacity)


class ImageSpec(PlacedSpec):
    """An image (PNG alpha respected) resized to a square patch; the built-in flower by default."""

    kind: Literal["image"] = "image"
    path: Path | None = Field(None, description="image file (PNG, JPEG, ...); alpha is respected")
    builtin: Literal["flower"] | None = Field(
        None, description="a procedurally drawn image shipped with triggerlab (used without path)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ImageSpec:
        if self.path is not None and self.builtin is not None:
            raise ValueError("set either path or builtin, not both")
        return self

    def build(self, shape: ImageShape, where: str = "trigger") -> Stamp:
        side, top, left = self.placement(shape, where)
        rgba = (
            flower_rgba(side) if self.path is None else load_rgba(self.path, side, f"{where}.path")
        )
        pattern = rgb_to_channels(rgba[:3], shape[0])
        return Stamp(pattern, rgba[3:], top, left, self.opacity)


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
