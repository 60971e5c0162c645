"""Fine-pruning (Liu, Dolan-Gavitt and Garg, 2018).

The last convolution's channels that stay least active on clean inputs are the
ones a backdoor can hide in: zero them (a mask on that layer's output), then
fine-tune. With batch normalisation right after the convolution, the
normalisation's shift still reaches the next layer: the mask removes the
channel's response to the input.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from triggerlab.catalogue.defenses import FinePruningSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, retrain
from triggerlab.defenses.features import last_layer
from triggerlab.train.loop import forward_all


def last_conv(model: nn.Module) -> nn.Conv2d:
    return last_layer(model, nn.Conv2d, "fine_pruning")  # type: ignore[return-value]


@torch.no_grad()
def channel_activity(
    model: nn.Module, layer: nn.Module, images: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Mean positive activation of each output channel of ``layer`` over the images."""
    total: list[torch.Tensor] = []

    def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        total.append(output.relu().mean(dim=(2, 3)).sum(dim=0).cpu())

    handle = layer.register_forward_hook(record)
    try:
        forward_all(model, images, device)
    finally:
        handle.remove()
    return torch.stack(total).sum(dim=0) / images.shape[0]


def select_pruned_channels(
    model: nn.Module, images: torch.Tensor, ratio: float, device: torch.device
) -> list[int]:
    """The ``round(ratio * C)`` channels of the last convolution least active on ``images``."""
    activity = channel_activity(model, last_conv(model), images, device)
    count = round(ratio * activity.numel())
    order = torch.argsort(activity, stable=True)
    return sorted(order[:count].tolist())


def mask_channels(layer: nn.Module, channels: list[int]) -> torch.utils.hooks.RemovableHandle:
    """Zero the given output channels of ``layer`` from now on (a forward hook)."""

    def zero(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(output.shape[1], device=output.device, dtype=output.dtype)
        mask[channels] = 0
        return output * mask.view(1, -1, 1, 1)

    return layer.register_forward_hook(zero)


def run_fine_pruning(spec: FinePruningSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    model, clean = inputs.model, inputs.clean
    layer = last_conv(model)
    channels = select_pruned_channels(model, clean.images, spec.prune_ratio, inputs.device)
    mask_channels(layer, channels)
    result = retrain(spec, inputs, clean.images, clean.targets)
    result.pruned_channels = channels
    result.channels = layer.out_channels
    return DefenseOutcome({**asdict(result), "lr": spec.lr}, repaired=True)
