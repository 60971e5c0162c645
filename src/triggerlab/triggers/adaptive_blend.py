"""Adaptive-Blend (Qi, Xie, Li, Mahloujifar & Mittal, "Revisiting the Assumption of Latent
Separability for Backdoor Defenses", ICLR 2023).

A blend trigger ``x' = (1 - a m) x + a m p`` whose mask ``m`` is cut into
``pieces`` tiles on a square grid. At test time every tile is on (``m = 1``).
Each poisoned training sample shows only a random subset (``masked_pieces``
tiles off, drawn per sample) at the training opacity, and *cover* samples,
triggered the same way, keep their true labels: ``conservatism`` is the share
of all triggered training samples that keep their labels (the paper's 0.003
poison and 0.003 cover rates are a conservatism of 0.5). Both make the poisoned
samples' latent features less separable from clean ones, which is what the
attack is designed to exploit in defences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from triggerlab.catalogue.triggers import AdaptiveBlendSpec, ImageShape
from triggerlab.errors import ConfigError
from triggerlab.triggers.overlay import blend_pattern


def piece_map(height: int, width: int, per_side: int) -> torch.Tensor:
    """``[H, W]`` index of the tile each pixel lies in; tile edges at ``floor(k H / per_side)``."""
    rows = torch.arange(height) * per_side // height
    cols = torch.arange(width) * per_side // width
    return rows[:, None] * per_side + cols[None, :]


@dataclass(frozen=True)
class AdaptiveBlend:
    pattern: torch.Tensor  # [C, H, W]
    pieces: torch.Tensor  # [H, W] tile index
    count: int  # tiles in all
    masked: int  # tiles off per poisoned training sample
    opacity: float
    train_opacity: float
    cover_ratio: float

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        pattern = self.pattern.to(device=x.device, dtype=x.dtype)
        return (1 - self.opacity) * x + self.opacity * pattern

    def apply_payload(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The trigger with ``masked`` tiles, drawn per sample, left off."""
        batch = x.shape[0]
        order = torch.rand(batch, self.count, generator=generator).argsort(dim=1)
        on = torch.ones(batch, self.count)
        on.scatter_(1, order[:, : self.masked], 0.0)
        mask = on[:, self.pieces].unsqueeze(1).to(device=x.device, dtype=x.dtype)
        weight = self.train_opacity * mask
        return (1 - weight) * x + weight * self.pattern.to(device=x.device, dtype=x.dtype)

    def apply_cover(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.apply_payload(x, generator)


def build_adaptive_blend(
    spec: AdaptiveBlendSpec, shape: ImageShape, where: str = "trigger"
) -> AdaptiveBlend:
    _, height, width = shape
    per_side = math.isqrt(spec.pieces)
    if per_side > min(height, width):
        raise ConfigError(
            f"{where}.pieces: a {per_side}x{per_side} grid of tiles is larger than the "
            f"{height}x{width} image (expected at most {min(height, width) ** 2} pieces)"
        )
    return AdaptiveBlend(
        pattern=blend_pattern(spec.pattern, spec.path, spec.seed, shape, where),
        pieces=piece_map(height, width, per_side),
        count=spec.pieces,
        masked=spec.masked_pieces,
        opacity=spec.opacity,
        train_opacity=spec.opacity if spec.train_opacity is None else spec.train_opacity,
        cover_ratio=spec.conservatism / (1 - spec.conservatism),
    )
