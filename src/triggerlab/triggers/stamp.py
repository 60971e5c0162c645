"""Patch and image-patch triggers: a pattern blended into a rectangle of the image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from triggerlab.errors import ConfigError
from triggerlab.triggers.base import ImageShape
from triggerlab.triggers.colors import ColorValue, color_tensor, parse_color, rgb_to_channels
from triggerlab.triggers.geometry import (
    PositionValue,
    SizeValue,
    parse_position,
    parse_size,
    resolve_position,
    resolve_size,
)


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


Color = Annotated[ColorValue, BeforeValidator(parse_color)]
Size = Annotated[SizeValue, BeforeValidator(parse_size)]
Position = Annotated[PositionValue, BeforeValidator(parse_position)]


class PlacedSpec(BaseModel):
    """Fields shared by triggers stamped into a square of the image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: Size = Field(3, description="side in pixels (int) or fraction of the shorter side")
    position: Position = Field(
        "bottom_right", description="named position or [x, y] of the top-left pixel"
    )
    opacity: float = Field(1.0, gt=0.0, le=1.0, description="blend weight a in (0, 1]")
    margin: int = Field(0, ge=0, description="pixels between a corner trigger and the border")

    def placement(self, shape: ImageShape) -> tuple[int, int, int]:
        """``(side, top, left)`` on an image of ``shape``; ConfigError when it does not fit."""
        _, height, width = shape
        side = resolve_size(self.size, height, width)
        if side > min(height, width):
            raise ConfigError(
                f"trigger.size: a {side}-pixel trigger does not fit a {height}x{width} image "
                f"(expected at most {min(height, width)} pixels)"
            )
        top, left = resolve_position(self.position, (side, side), (height, width), self.margin)
        if top < 0 or left < 0 or top + side > height or left + side > width:
            raise ConfigError(
                f"trigger.position: a {side}x{side} trigger at {self.position} with margin "
                f"{self.margin} falls outside the {height}x{width} image"
            )
        return side, top, left


class PatchSpec(PlacedSpec):
    """BadNets square patch of one colour."""

    kind: Literal["patch"] = "patch"
    color: Color = Field("white", description="name, grey level 0-255 or [R, G, B]")

    def build(self, shape: ImageShape) -> Stamp:
        side, top, left = self.placement(shape)
        pattern = color_tensor(self.color, shape[0]).expand(shape[0], side, side).contiguous()
        return Stamp(pattern, torch.ones(1, side, side), top, left, self.opacity)


class ImageSpec(PlacedSpec):
    """A user image (PNG with alpha, or any format PIL reads) resized to a square patch."""

    kind: Literal["image"] = "image"
    path: Path = Field(description="image file; its alpha channel is respected")

    def build(self, shape: ImageShape) -> Stamp:
        side, top, left = self.placement(shape)
        rgba = load_rgba(self.path, side)
        pattern = rgb_to_channels(rgba[:3], shape[0])
        return Stamp(pattern, rgba[3:], top, left, self.opacity)


def load_rgba(path: Path, side: int) -> torch.Tensor:
    """Read an image as float RGBA ``[4, side, side]``, resized with premultiplied alpha."""
    try:
        with Image.open(path) as img:
            # Premultiplying before resampling keeps transparent pixels' colours out of edges.
            premultiplied = img.convert("RGBA").convert("RGBa")
            resized = premultiplied.resize((side, side), Image.Resampling.LANCZOS).convert("RGBA")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ConfigError(f"trigger.path: cannot read image file {path}: {exc}") from exc
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def describe_spec(spec_cls: type[BaseModel]) -> list[tuple[str, str, str]]:
    """``(field, default, description)`` rows of a trigger spec, for listings."""
    rows = []
    for name, info in spec_cls.model_fields.items():
        if name == "kind":
            continue
        default: Any = "(required)" if info.is_required() else info.default
        rows.append((name, str(default), info.description or ""))
    return rows
