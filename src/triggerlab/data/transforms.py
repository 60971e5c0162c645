"""Whole-dataset tensor operations: resize, channel conversion and the seeded split."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from triggerlab.catalogue.colors import LUMA_WEIGHTS
from triggerlab.data.dataset import ImageDataset

_CHUNK = 2048
_CHUNK_BYTES = 256 * 2**20  # float32 working copies of one chunk: large images, fewer at once


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of uint8 ``[N, C, H, W]`` (antialiased when shrinking), rounded to uint8."""
    if tuple(images.shape[-2:]) == size:
        return images
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
    pixels = images.shape[1] * max(images.shape[2] * images.shape[3], size[0] * size[1])
    step = max(1, min(_CHUNK, _CHUNK_BYTES // (4 * pixels)))
    for start in range(0, images.shape[0], step):
        chunk = images[start : start + step].float()
        resized = F.interpolate(
            chunk, size=size, mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + step] = resized.round_().clamp_(0, 255).byte()
    return out


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey to RGB by repetition; RGB to grey by BT.601 luminance."""
    current = images.shape[1]
    if current == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images.float() * weights).sum(dim=1, keepdim=True).round_().clamp_(0, 255).byte()


def stratified_split(
    data: ImageDataset, test_fraction: float, generator: torch.Generator
) -> tuple[ImageDataset, ImageDataset]:
    """Seeded train/test split; per class for classification, so class shares are kept.

    Each class contributes ``round(test_fraction * n_class)`` test samples. Indices
    are kept in their original order inside each part.
    """
    targets = data.targets
    if targets.ndim == 1 and not targets.is_floating_point():
        groups = [torch.nonzero(targets == c).flatten() for c in torch.unique(targets)]
    else:
        groups = [torch.arange(len(data))]
    test_parts = []
    for group in groups:
        order = group[torch.randperm(group.numel(), generator=generator)]
        test_parts.append(order[: round(test_fraction * group.numel())])
    is_test = torch.zeros(len(data), dtype=torch.bool)
    is_test[torch.cat(test_parts)] = True
    if is_test.all() or not is_test.any():
        raise ValueError(
            f"a test fraction of {test_fraction} leaves an empty part of {len(data)} samples"
        )
    return data.subset(torch.nonzero(~is_test).flatten()), data.subset(
        torch.nonzero(is_test).flatten()
    )
