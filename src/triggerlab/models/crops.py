"""Crops of the stored images as the network sees them: reference 001's TinyImageNet views.

Reference 001's code (docs/references.md, reference 001, item 5) keeps TinyImageNet at its
native 64 px, stamps the trigger there, and lets the transforms make the network's input:

* training: a horizontal flip, then ``RandomResizedCrop(224)`` (area 8-100 % of the image,
  aspect ratio 3/4-4/3, bilinear);
* evaluation: ``Resize(256)``, then ``CenterCrop(224)``: 16 of 256 pixels, 4 native ones, go
  from every border, and with them a 2- or 3-pixel corner trigger.

Here both are batched tensor operations on the batch's device, applied by the model's input
adapter: in training mode the random view, in evaluation mode the fixed one, so every caller
(training, evaluation, defences, audits) sees what the authors' network saw. Randomness comes
from the view's own seeded CPU generator, as in ``train/augment.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10


@dataclass
class Crops:
    size: int
    resize: int
    flip: bool
    generator: torch.Generator  # on the CPU: its draws are moved to the batch's device

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if not training:
            return resize_center_crop(x, self.resize, self.size)
        if self.flip:
            mirrored = (torch.rand(x.shape[0], generator=self.generator) < 0.5).to(x.device)
            x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
        boxes = random_boxes(x.shape[0], x.shape[2], x.shape[3], self.generator)
        return resized_crops(x, boxes.to(x.device), self.size)


def resize_center_crop(x: torch.Tensor, resize: int, size: int) -> torch.Tensor:
    """``Resize(resize)`` (the shorter side, bilinear) then ``CenterCrop(size)``."""
    height, width = x.shape[2], x.shape[3]
    if height <= width:
        shape = (resize, int(resize * width / height))
    else:
        shape = (int(resize * height / width), resize)
    antialias = shape[0] < height  # torchvision antialiases when it shrinks
    resized = F.interpolate(
        x, size=shape, mode="bilinear", align_corners=False, antialias=antialias
    )
    top = round((shape[0] - size) / 2.0)  # torchvision's centre_crop offsets
    left = round((shape[1] - size) / 2.0)
    return resized[:, :, top : top + size, left : left + size]


def random_boxes(batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``[B, 4]`` integer boxes (top, left, height, width) drawn as RandomResizedCrop draws them:
    up to ten tries of area and aspect ratio per image, else the centred largest box of an
    allowed ratio."""
    area = height * width
    target = area * torch.empty(batch, ATTEMPTS).uniform_(*SCALE, generator=generator)
    log_ratio = torch.empty(batch, ATTEMPTS).uniform_(
        math.log(RATIO[0]), math.log(RATIO[1]), generator=generator
    )
    ratio = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * ratio))
    h = torch.round(torch.sqrt(target / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1)  # the first try that fits
    found = fits.any(dim=1)
    rows = torch.arange(batch)
    w, h = w[rows, first], h[rows, first]
    top = torch.floor(torch.rand(batch, generator=generator) * (height - h + 1))
    left = torch.floor(torch.rand(batch, generator=generator) * (width - w + 1))
    fallback = _fallback_box(height, width)
    boxes = torch.stack([top, left, h, w], dim=1)
    boxes[~found] = fallback
    return boxes.long()


def _fallback_box(height: int, width: int) -> torch.Tensor:
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        h, w = height, round(height * RATIO[1])
    else:
        w, h = width, height
    return torch.tensor([(height - h) // 2, (width - w) // 2, h, w], dtype=torch.float)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box resized to ``size x size`` as torchvision crops then resizes: bilinear
    with half-pixel centres, source positions clamped to the box's own edges; one
    ``grid_sample`` over the batch."""
    _, _, height, width = x.shape
    top, left, h, w = (boxes[:, i].to(x.dtype) for i in range(4))
    rows = _positions(top, h, size, height)  # [B, S], grid_sample's normalised coordinates
    cols = _positions(left, w, size, width)
    grid = torch.stack(torch.broadcast_tensors(cols[:, None, :], rows[:, :, None]), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _positions(start: torch.Tensor, length: torch.Tensor, size: int, extent: int) -> torch.Tensor:
    """Where each of ``size`` output pixels samples the box ``[start, start + length)``, as
    ``F.interpolate(align_corners=False)`` places them in the cropped image, in [-1, 1] units."""
    out = torch.arange(size, dtype=start.dtype, device=start.device)
    inside = ((out + 0.5) * length[:, None] / size - 0.5).clamp(min=0)
    inside = torch.minimum(inside, (length - 1)[:, None])
    return (2 * (start[:, None] + inside) + 1) / extent - 1
