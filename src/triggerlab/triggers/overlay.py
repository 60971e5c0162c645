"""Full-image triggers: a frame, evenly spaced lines, and a blended pattern (noise or image)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from triggerlab.errors import ConfigError
from triggerlab.triggers.base import ImageShape, Overlay, SpecBase
from triggerlab.triggers.colors import color_tensor, rgb_to_channels
from triggerlab.triggers.geometry import resolve_size
from triggerlab.triggers.stamp import COLOR_HELP, OPACITY_HELP, SIZE_HELP, Color, Size, load_rgba


class StrokeSpec(SpecBase):
    """Fields shared by triggers drawn as solid strokes across the image."""

    thickness: Size = Field(1, description=SIZE_HELP)
    color: Color = Field("white", description=COLOR_HELP)
    opacity: float = Field(1.0, gt=0.0, le=1.0, description=OPACITY_HELP)


class FrameSpec(StrokeSpec):
    """A border around the whole image (reference 000: 5, 10 and 40 px on 448 px)."""

    kind: Literal["frame"] = "frame"

    def build(self, shape: ImageShape, where: str = "trigger") -> Overlay:
        channels, height, width = shape
        t = resolve_size(self.thickness, height, width)
        limit = (min(height, width) - 1) // 2
        if t > limit:
            raise ConfigError(
                f"{where}.thickness: a {t}-pixel frame covers the whole {height}x{width} image "
                f"(expected 1 to {limit} pixels)"
            )
        mask = torch.ones(1, height, width)
        mask[:, t : height - t, t : width - t] = 0.0
        return Overlay(color_tensor(self.color, channels), mask, self.opacity)


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


class LinesSpec(StrokeSpec):
    """Evenly spaced lines (reference 000: 10, 20 and 40, vertical or horizontal)."""

    kind: Literal["lines"] = "lines"
    count: int = Field(10, ge=1, description="number of lines")
    orientation: Literal["vertical", "horizontal"] = Field(
        "vertical", description="vertical lines are columns, horizontal lines are rows"
    )

    def build(self, shape: ImageShape, where: str = "trigger") -> Overlay:
        channels, height, width = shape
        t = resolve_size(self.thickness, height, width)
        across = width if self.orientation == "vertical" else height
        if self.count * t >= across:
            raise ConfigError(
                f"{where}.count: {self.count} lines {t} pixel(s) thick do not fit across "
                f"{across} pixels (expected count x thickness < {across})"
            )
        profile = torch.zeros(across)
        for start in line_starts(self.count, t, across):
            profile[start : start + t] = 1.0
        if not lines_stay_apart(self.count, t, across):
            fitting = max(n for n in range(1, self.count) if lines_stay_apart(n, t, across))
            raise ConfigError(
                f"{where}.count: {self.count} lines {t} pixel(s) thick merge into "
                f"{bands(profile)} bands across {across} pixels; at most {fitting} stay "
                "separate at this resolution (each needs its thickness and a gap)"
            )
        mask = (
            profile.view(1, 1, width)
            if self.orientation == "vertical"
            else profile.view(1, height, 1)
        )
        return Overlay(
            color_tensor(self.color, channels),
            mask.expand(1, height, width).contiguous(),
            self.opacity,
        )


class BlendSpec(SpecBase):
    """Blend the whole image with a fixed pattern: seeded uniform noise or an image."""

    kind: Literal["blend"] = "blend"
    pattern: Literal["noise", "image"] = Field(
        "noise", description="uniform noise, or the image at path"
    )
    path: Path | None = Field(None, description="image resized to the input (pattern: image)")
    opacity: float = Field(0.1, gt=0.0, le=1.0, description=OPACITY_HELP)
    seed: int = Field(0, ge=0, description="seed of the noise pattern, fixed for the whole attack")

    @model_validator(mode="after")
    def _path_for_image(self) -> BlendSpec:
        if self.pattern == "image" and self.path is None:
            raise ValueError("pattern 'image' needs a path")
        if self.pattern == "noise" and self.path is not None:
            raise ValueError("path is only used with pattern 'image'")
        return self

    def build(self, shape: ImageShape, where: str = "trigger") -> Overlay:
        _, height, width = shape
        pattern = blend_pattern(self.pattern, self.path, self.seed, shape, where)
        return Overlay(pattern, torch.ones(1, height, width), self.opacity)


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
