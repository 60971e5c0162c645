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
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from triggerlab.errors import ConfigError
from triggerlab.triggers.base import ImageShape, SpecBase
from triggerlab.triggers.overlay import blend_pattern
from triggerlab.triggers.stamp import OPACITY_HELP


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


class AdaptiveBlendSpec(SpecBase):
    """Adaptive-Blend: a blend shown in random pieces, with cover samples (Qi et al. 2023)."""

    kind: Literal["adaptive_blend"] = "adaptive_blend"
    pattern: Literal["noise", "image"] = Field(
        "noise", description="uniform noise, or the image at path"
    )
    path: Path | None = Field(None, description="image resized to the input (pattern: image)")
    opacity: float = Field(0.2, gt=0.0, le=1.0, description=f"at test time; {OPACITY_HELP}")
    train_opacity: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="on poisoned training samples (default: opacity; "
        "authors: 0.15 against 0.2 at test)",
    )
    pieces: int = Field(16, ge=4, description="tiles of the mask, a square number (paper: 16)")
    masked_pieces: int = Field(
        8, ge=0, description="tiles off on each poisoned training sample (paper: 8)"
    )
    conservatism: float = Field(
        0.5, ge=0.0, le=0.9, description="share of triggered training samples keeping their label"
    )
    seed: int = Field(0, ge=0, description="seed of the noise pattern, fixed for the whole attack")

    @model_validator(mode="after")
    def _pieces(self) -> AdaptiveBlendSpec:
        if math.isqrt(self.pieces) ** 2 != self.pieces:
            raise ValueError(f"pieces {self.pieces} must be a square number (4, 9, 16, ...)")
        if self.masked_pieces >= self.pieces:
            raise ValueError(
                f"masked_pieces {self.masked_pieces} must be below pieces {self.pieces}"
            )
        if (self.pattern == "image") != (self.path is not None):
            raise ValueError("pattern 'image' needs a path, and only it takes one")
        return self

    def build(self, shape: ImageShape, where: str = "trigger") -> AdaptiveBlend:
        _, height, width = shape
        per_side = math.isqrt(self.pieces)
        if per_side > min(height, width):
            raise ConfigError(
                f"{where}.pieces: a {per_side}x{per_side} grid of tiles is larger than the "
                f"{height}x{width} image (expected at most {min(height, width) ** 2} pieces)"
            )
        return AdaptiveBlend(
            pattern=blend_pattern(self.pattern, self.path, self.seed, shape, where),
            pieces=piece_map(height, width, per_side),
            count=self.pieces,
            masked=self.masked_pieces,
            opacity=self.opacity,
            train_opacity=self.train_opacity or self.opacity,
            cover_ratio=self.conservatism / (1 - self.conservatism),
        )
