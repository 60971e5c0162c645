"""Square patches whose colour, size and position are drawn per sample (reference 000).

Draws come from the generator passed to ``apply`` (the run's seeded stream),
so the same seed gives the same triggers, while samples in a batch differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triggerlab.catalogue.geometry import fit_position
from triggerlab.catalogue.triggers import (
    ImageShape,
    RandomPatchSpec,
)
from triggerlab.errors import ConfigError
from triggerlab.triggers.colors import color_tensor


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


def build_random(spec: RandomPatchSpec, shape: ImageShape, where: str = "trigger") -> RandomPatch:
    channels, height, width = shape
    sides = spec.side_choices(shape, where)
    if max(sides) + 2 * spec.margin > min(height, width):
        raise ConfigError(
            f"{where}.margin: a margin of {spec.margin} leaves no room for a "
            f"{max(sides)}-pixel "
            f"patch on a {height}x{width} image"
        )
    colors = torch.stack([color_tensor(c, channels).flatten() for c in spec.colors])
    tops = lefts = None
    if spec.positions != "anywhere":
        table = [
            [fit_position(p, s, spec.margin, shape, f"{where}.positions") for s in sides]
            for p in spec.positions
        ]
        tops = torch.tensor([[t for t, _ in row] for row in table])
        lefts = torch.tensor([[left for _, left in row] for row in table])
    return RandomPatch(colors, torch.tensor(sides), tops, lefts, spec.margin, spec.opacity)
