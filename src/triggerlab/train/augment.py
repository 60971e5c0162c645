"""Batched, on-device augmentation of training batches, seeded from the run's seed.

Each training batch is augmented as one tensor operation on the device it trains on:
no per-sample PIL pipeline. Poisoned images are augmented like every other image
(the trigger moves with the crop, as in the public implementations); test sets are
never augmented.

* ``random_crop``: pad by ``padding`` pixels of zeros on every side, then cut the
  original size at a random offset per image (the CIFAR recipe, padding 4);
* ``hflip``: mirror each image left-right with probability 1/2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OPERATIONS = ("random_crop", "hflip")


@dataclass
class Augment:
    operations: Sequence[str]
    padding: int
    generator: torch.Generator  # on the CPU: its draws are moved to the batch's device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:  # cached features are not images
            return x
        for name in self.operations:
            x = random_crop(x, self.padding, self.generator) if name == "random_crop" else x
            x = hflip(x, self.generator) if name == "hflip" else x
        return x


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """A ``H x W`` window of the zero-padded batch at a random offset per image."""
    batch, _, height, width = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(height, device=x.device)  # [B, H]
    cols = offsets[1, :, None] + torch.arange(width, device=x.device)  # [B, W]
    index = torch.arange(batch, device=x.device)[:, None, None]
    channels_last = padded.permute(0, 2, 3, 1)  # [B, H', W', C]: pick rows and columns per image
    cropped = channels_last[index, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return cropped.permute(0, 3, 1, 2).contiguous(memory_format=_layout(x))


def hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _layout(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.contiguous_format):
        return torch.contiguous_format
    return torch.channels_last
