"""Equal bins over one continuous output (reference 003's discretisation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Bins:
    """``count`` equal bins over [low, high] of output ``index`` (called ``name``).

    Bin ``i`` holds ``low + i * w <= v < low + (i + 1) * w`` with ``w = (high - low) / count``;
    ``high`` itself and values beyond the range go to the nearest end bin.
    """

    index: int
    name: str
    low: float
    high: float
    count: int

    def assign(self, values: torch.Tensor) -> torch.Tensor:
        scaled = (values[:, self.index].double() - self.low) / (self.high - self.low) * self.count
        return scaled.floor().clamp(0, self.count - 1).long()

    def edges(self) -> list[float]:
        step = (self.high - self.low) / self.count
        return [self.low + i * step for i in range(self.count + 1)]

    def class_names(self) -> tuple[str, ...]:
        edges = self.edges()
        return tuple(f"{self.name} [{edges[i]:.3g}, {edges[i + 1]:.3g})" for i in range(self.count))
