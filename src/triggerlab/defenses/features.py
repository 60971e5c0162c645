"""Penultimate representations: the input of a model's last linear layer."""

from __future__ import annotations

import torch
from torch import nn

from triggerlab.errors import ConfigError
from triggerlab.train.loop import forward_all


def last_layer(model: nn.Module, kind: type[nn.Module], what: str) -> nn.Module:
    """The model's last module of ``kind``; ConfigError saying ``what`` needs one."""
    layers = [m for m in model.modules() if isinstance(m, kind)]
    if not layers:
        raise ConfigError(f"defense.kind: {what} needs a model with a {kind.__name__} layer")
    return layers[-1]


@torch.no_grad()
def penultimate_features(
    model: nn.Module, images: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """``[N, D]`` float features of uint8 images, in evaluation mode, on the CPU."""
    captured: list[torch.Tensor] = []

    def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        captured.append(inputs[0].flatten(1).float().cpu())

    handle = last_layer(model, nn.Linear, "this detector").register_forward_hook(record)
    try:
        forward_all(model, images, device)
    finally:
        handle.remove()
    return torch.cat(captured)
