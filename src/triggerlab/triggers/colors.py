"""Trigger colours: names, grey levels or RGB triples, and their single-channel mapping.

On single-channel images a colour becomes its luminance under ITU-R BT.601,
``L = 0.299 R + 0.587 G + 0.114 B`` (the rule PIL uses for mode "L"), so a red
patch on MNIST is the grey level 76, not 255.
"""

from __future__ import annotations

import torch

from triggerlab.catalogue.colors import LUMA_WEIGHTS, ColorValue, color_rgb


def rgb_to_channels(rgb: torch.Tensor, channels: int) -> torch.Tensor:
    """Map float RGB values ``[3, ...]`` to ``channels`` channels (1: BT.601 luminance)."""
    if channels == 3:
        return rgb
    if channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=rgb.dtype, device=rgb.device)
        return torch.tensordot(weights, rgb, dims=([0], [0])).unsqueeze(0)
    raise ValueError(f"images must have 1 or 3 channels, got {channels}")


def color_tensor(color: ColorValue, channels: int) -> torch.Tensor:
    """The colour as floats in [0, 1] with shape ``[channels, 1, 1]``."""
    rgb = torch.tensor(color_rgb(color), dtype=torch.float32) / 255.0
    return rgb_to_channels(rgb, channels).view(channels, 1, 1)
