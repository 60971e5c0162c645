"""Channel Lipschitzness-based Pruning (CLP; Zheng, Zhang, Wagner, Goldstein and Li, ECCV 2022).

Data-free: a backdoor is carried by channels that are unusually sensitive to
their input. A channel's upper bound on its Lipschitz constant (UCLC) is the
largest singular value of its convolution kernel, reshaped to
``[in_channels, kh * kw]`` and scaled by ``|gamma / sigma|`` of the batch
normalisation that follows (the kernel alone when none does). Within each
layer, channels whose UCLC exceeds ``mean + u * std`` of that layer are pruned
(their normalisation's weight and bias set to zero, as the authors' code does;
the convolution's weight and bias without normalisation). ``u = 3`` is the
paper's default.
"""

from __future__ import annotations

import torch

from triggerlab.catalogue.defenses import ClpSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome
from triggerlab.defenses.neurons import NeuronLayer, neuron_layers


@torch.no_grad()
def channel_lipschitz(layer: NeuronLayer) -> torch.Tensor:
    """UCLC ``[C]`` of each output channel of the layer."""
    weight = layer.conv.weight.detach().double().cpu()
    kernels = weight.reshape(weight.shape[0], weight.shape[1], -1)
    if layer.norm is not None:
        norm = layer.norm
        std = (norm.running_var.detach().double().cpu() + norm.eps).sqrt()
        scale = (norm.weight.detach().double().cpu() / std).abs()
        kernels = kernels * scale.view(-1, 1, 1)
    return torch.linalg.matrix_norm(kernels, ord=2)


def lipschitz_outliers(uclc: torch.Tensor, u: float) -> list[int]:
    """Channels whose UCLC is above ``mean + u * std`` of their layer."""
    if uclc.numel() < 2:
        return []
    threshold = uclc.mean() + u * uclc.std()
    return torch.nonzero(uclc > threshold).flatten().tolist()


@torch.no_grad()
def zero_channels(layer: NeuronLayer, channels: list[int]) -> None:
    module = layer.scaled
    module.weight[channels] = 0
    if module.bias is not None:
        module.bias[channels] = 0


def run_clp(spec: ClpSpec, inputs: DefenseInputs) -> DefenseOutcome:
    pruned: dict[str, list[int]] = {}
    total = 0
    for layer in neuron_layers(inputs.model, "clp"):
        channels = lipschitz_outliers(channel_lipschitz(layer), spec.u)
        zero_channels(layer, channels)
        total += layer.channels
        if channels:
            pruned[layer.name] = channels
    report = {
        "clean_samples": 0,
        "pruned_channels": pruned,
        "pruned": sum(len(c) for c in pruned.values()),
        "channels": total,
    }
    return DefenseOutcome(report, repaired=True)
