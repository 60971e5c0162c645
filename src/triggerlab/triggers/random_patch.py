"""Square patches whose colour, size and position are drawn per sample (reference 000).

Draws come from the generator passed to ``apply`` (the run's seeded stream),
so the same seed gives the same triggers, while samples in a batch differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from triggerlab.errors import ConfigError
from triggerlab.triggers.base import ImageShape, SpecBase
from triggerlab.triggers.colors import color_tensor
from triggerlab.triggers.stamp import (
    COLOR_HELP,
    OPACITY_HELP,
    SIZE_HELP,
    Color,
    Position,
    Size,
    fit_position,
    fit_side,
)


@dataclass(frozen=True)
class RandomPatch:
    colors: torch.Tensor  # [K, C] in [0, 1]
    sizes: torch.Tensor  # [S] pixels
    tops: torch.Tensor | None  # [P, S] for named positions; None means anywhere
    lefts: torch.Tensor | None
    margin: int
    opacity: float

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator | None):
        """Per-sample colour index, side, top and left (CPU tensors)."""
        color = torch.randint(self.colors.shape[0], (batch,), generator=generator)
        size_index = torch.randint(self.sizes.numel(), (batch,), generator=generator)
        side = self.sizes[size_index]
        if self.tops is None or self.lefts is None:
            u = torch.rand(2, batch, generator=generator)
            top = self.margin + (u[0] * (height - side - 2 * self.margin + 1)).long()
            left = self.margin + (u[1] * (width - side - 2 * self.margin + 1)).long()
        else:
            place = torch.randint(self.tops.shape[0], (batch,), generator=generator)
            top, left = self.tops[place, size_index], self.lefts[place, size_index]
        return color, side, top, left

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, height, width = x.shape
        color, side, top, left = (
            t.to(x.device) for t in self.draw(batch, height, width, generator)
        )
        rows = torch.arange(height, device=x.device).view(1, height)
        cols = torch.arange(width, device=x.device).view(1, width)
        in_rows = (rows >= top[:, None]) & (rows < (top + side)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + side)[:, None])
        mask = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1).to(x.dtype)
        weight = self.opacity * mask
        pattern = self.colors.to(device=x.device, dtype=x.dtype)[color].view(batch, -1, 1, 1)
        return (1.0 - weight) * x + weight * pattern


class RandomPatchSpec(SpecBase):
    """A square patch with colour, size and position drawn per sample from choices or ranges."""

    kind: Literal["random"] = "random"
    colors: list[Color] = Field(
        ["red", "green", "blue"], min_length=1, description=f"choices; {COLOR_HELP}"
    )
    sizes: list[Size] | None = Field(None, min_length=1, description=f"choices; {SIZE_HELP}")
    size_range: tuple[int, int] | None = Field(
        None, description="[min, max] pixels, inclusive, instead of sizes"
    )
    positions: Literal["anywhere"] | list[Position] = Field(
        "anywhere", description="'anywhere' (uniform over the image) or a list of positions"
    )
    opacity: float = Field(1.0, gt=0.0, le=1.0, description=OPACITY_HELP)
    margin: int = Field(0, ge=0, description="pixels kept free along the border")

    @model_validator(mode="after")
    def _one_size_rule(self) -> RandomPatchSpec:
        if self.sizes is not None and self.size_range is not None:
            raise ValueError("set either sizes or size_range, not both")
        if self.size_range is not None and not 1 <= self.size_range[0] <= self.size_range[1]:
            raise ValueError(f"size_range {list(self.size_range)} must satisfy 1 <= min <= max")
        return self

    def side_choices(self, shape: ImageShape, where: str) -> list[int]:
        if self.size_range is not None:
            low, high = self.size_range
            fit_side(high, shape, f"{where}.size_range")
            return list(range(low, high + 1))
        return [fit_side(s, shape, f"{where}.sizes") for s in (self.sizes or [3])]

    def build(self, shape: ImageShape, where: str = "trigger") -> RandomPatch:
        channels, height, width = shape
        sides = self.side_choices(shape, where)
        if max(sides) + 2 * self.margin > min(height, width):
            raise ConfigError(
                f"{where}.margin: a margin of {self.margin} leaves no room for a "
                f"{max(sides)}-pixel "
                f"patch on a {height}x{width} image"
            )
        colors = torch.stack([color_tensor(c, channels).flatten() for c in self.colors])
        tops = lefts = None
        if self.positions != "anywhere":
            table = [
                [fit_position(p, s, self.margin, shape, f"{where}.positions") for s in sides]
                for p in self.positions
            ]
            tops = torch.tensor([[t for t, _ in row] for row in table])
            lefts = torch.tensor([[left for _, left in row] for row in table])
        return RandomPatch(colors, torch.tensor(sides), tops, lefts, self.margin, self.opacity)
