"""The "neurons" that pruning defences act on: the output channels of each convolution,
taken with the batch normalisation that follows it when there is one.

ANP and CLP both define a neuron as a channel of a convolution followed by
batch normalisation (their code walks the modules in registration order and
pairs each ``BatchNorm2d`` with the ``Conv2d`` registered just before it). A
model without batch normalisation still has neurons: the convolution's own
channels, scaled through its weight and bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from triggerlab.errors import ConfigError


@dataclass(frozen=True)
class NeuronLayer:
    """One layer of neurons: a convolution and the normalisation that scales its channels."""

    name: str
    conv: nn.Conv2d
    norm: nn.BatchNorm2d | None

    @property
    def scaled(self) -> nn.Module:
        """The module whose weight and bias scale and shift each channel."""
        return self.norm if self.norm is not None else self.conv

    @property
    def channels(self) -> int:
        return self.conv.out_channels

    @torch.no_grad()
    def prune(self, channels: list[int]) -> None:
        """Zero the channels' weights, as ANP's code does: the bias (a constant) stays."""
        if channels:
            self.scaled.weight[channels] = 0


def neuron_layers(model: nn.Module, what: str) -> list[NeuronLayer]:
    """Every convolution with its batch normalisation (when the next module registered is
    one over the same channels); ConfigError naming ``what`` when the model has none."""
    modules = list(model.named_modules())
    layers = []
    for position, (name, module) in enumerate(modules):
        if not isinstance(module, nn.Conv2d):
            continue
        following = modules[position + 1][1] if position + 1 < len(modules) else None
        norm = (
            following
            if isinstance(following, nn.BatchNorm2d)
            and following.num_features == module.out_channels
            and following.affine
            else None
        )
        layers.append(NeuronLayer(name, module, norm))
    if not layers:
        raise ConfigError(f"defense.kind: {what} needs a model with convolution layers")
    return layers
