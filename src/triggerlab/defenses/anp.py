"""Adversarial Neuron Pruning (ANP; Wu and Wang, NeurIPS 2021).

Neurons that carry a backdoor are the ones whose small perturbation makes the
clean model misbehave most. Each neuron k (a channel, ``defenses/neurons.py``)
gets a mask ``m_k`` in [0, 1] (starting at 1) and perturbations ``delta_k`` of
its weight and ``xi_k`` of its bias, bounded by ``eps``: its output becomes
``(m_k + delta_k) * (weight part) + (1 + xi_k) * bias``. For ``iterations``
mini-batches of the defender's clean data, as in the authors' code: the
perturbations are drawn uniformly in [-eps, eps], take one signed ascent
step on the cross-entropy and are clipped; then the masks take one SGD step
(lr 0.2, momentum 0.9) on ``alpha * CE(masked) + (1 - alpha) * CE(masked and
perturbed)`` and are clipped to [0, 1]. Neurons whose mask ends at or below
``threshold`` (0.2) are pruned: their weight is set to zero, the bias stays.

The authors optimise with the network in training mode; here batch
normalisation keeps its running statistics (evaluation mode), because the
defender's clean sets are small and the pruned network is used with those
statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from triggerlab.catalogue.defenses import AnpSpec
from triggerlab.defenses.base import (
    DefenseInputs,
    DefenseOutcome,
    frozen_weights,
)
from triggerlab.defenses.neurons import NeuronLayer, neuron_layers
from triggerlab.train.devices import model_memory_format, to_input


@dataclass
class NeuronPerturbation:
    """Masks and bounded perturbations of one layer's neurons, applied by a forward hook."""

    layer: NeuronLayer
    mask: torch.Tensor
    weight_noise: torch.Tensor
    bias_noise: torch.Tensor
    perturbed: bool = False

    @classmethod
    def on(cls, layer: NeuronLayer, device: torch.device) -> NeuronPerturbation:
        c = layer.channels
        zeros = [torch.zeros(c, device=device, requires_grad=True) for _ in range(2)]
        return cls(layer, torch.ones(c, device=device, requires_grad=True), *zeros)

    def hook(self, module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        bias = module.bias if module.bias is not None else None
        shape = (1, -1, 1, 1)
        weight_part = output if bias is None else output - bias.view(shape)
        coefficient = self.mask + self.weight_noise if self.perturbed else self.mask
        result = weight_part * coefficient.view(shape)
        if bias is not None:
            bias_coefficient = 1 + self.bias_noise if self.perturbed else torch.ones_like(bias)
            result = result + (bias * bias_coefficient).view(shape)
        return result


@dataclass
class MaskSearch:
    """The state of ANP's search: every layer's masks and perturbations, and their optimisers."""

    parts: list[NeuronPerturbation]
    eps: float
    alpha: float
    mask_opt: torch.optim.Optimizer
    noise_opt: torch.optim.Optimizer

    @classmethod
    def over(
        cls, parts: list[NeuronPerturbation], eps: float, alpha: float, mask_lr: float
    ) -> MaskSearch:
        """The search with its optimisers: SGD with momentum for the masks, and one signed
        step of size eps for the perturbations (the authors' anp_steps = 1)."""
        masks = [p.mask for p in parts]
        noises = [t for p in parts for t in (p.weight_noise, p.bias_noise)]
        mask_opt = torch.optim.SGD(masks, lr=mask_lr, momentum=0.9)
        return cls(parts, eps, alpha, mask_opt, torch.optim.SGD(noises, lr=eps))

    @property
    def masks(self) -> list[torch.Tensor]:
        return [p.mask for p in self.parts]

    @property
    def noises(self) -> list[torch.Tensor]:
        return [t for p in self.parts for t in (p.weight_noise, p.bias_noise)]

    def perturb(self, on: bool) -> None:
        for part in self.parts:
            part.perturbed = on

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> None:
        """One ascent step of the perturbations, then one descent step of the masks."""
        with torch.no_grad():
            for noise in self.noises:  # a fresh uniform draw in [-eps, eps]
                noise.copy_(self.eps * (torch.rand(noise.shape, generator=g) * 2 - 1))
        self.perturb(True)
        self.noise_opt.zero_grad()
        (-F.cross_entropy(model(x), y)).backward()
        for noise in self.noises:  # a signed step, as the authors' sign_grad
            noise.grad = noise.grad.sign() if noise.grad is not None else None
        self.noise_opt.step()
        with torch.no_grad():
            for noise in self.noises:
                noise.clamp_(-self.eps, self.eps)
        self.mask_opt.zero_grad()
        robust = F.cross_entropy(model(x), y)
        self.perturb(False)
        natural = F.cross_entropy(model(x), y)
        (self.alpha * natural + (1 - self.alpha) * robust).backward()
        self.mask_opt.step()
        with torch.no_grad():
            for mask in self.masks:
                mask.clamp_(0, 1)


def anp_masks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    iterations: int,
    batch_size: int,
    eps: float,
    alpha: float,
    mask_lr: float,
    device: torch.device,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The learnt mask of every neuron layer (name -> ``[C]`` on the CPU)."""
    model.eval()
    parts = [NeuronPerturbation.on(layer, device) for layer in neuron_layers(model, "anp")]
    search = MaskSearch.over(parts, eps, alpha, mask_lr)
    layout = model_memory_format(model)
    handles = [p.layer.scaled.register_forward_hook(p.hook) for p in parts]
    with frozen_weights(model):
        try:
            for _ in range(iterations):
                index = torch.randint(images.shape[0], (batch_size,), generator=generator)
                x, y = to_input(images[index], device, layout), labels[index].to(device)
                search.step(model, x, y, generator)
        finally:
            for handle in handles:
                handle.remove()
    return {p.layer.name: p.mask.detach().cpu() for p in parts}


def run_anp(spec: AnpSpec, inputs: DefenseInputs) -> DefenseOutcome:
    assert inputs.clean is not None
    clean = inputs.clean
    masks = anp_masks(
        inputs.model,
        clean.images,
        clean.targets,
        iterations=spec.iterations,
        batch_size=spec.batch_size,
        eps=spec.eps,
        alpha=spec.alpha,
        mask_lr=spec.mask_lr,
        device=inputs.device,
        generator=inputs.generator,
    )
    pruned: dict[str, list[int]] = {}
    for layer in neuron_layers(inputs.model, "anp"):
        # at or below, as the authors prune (csdongxian/ANP_backdoor prune_neuron_cifar.py:140):
        # at threshold 0 the masks clipped to exactly 0 are pruned
        channels = torch.nonzero(masks[layer.name] <= spec.threshold).flatten().tolist()
        layer.prune(channels)
        if channels:
            pruned[layer.name] = channels
    report = {
        "clean_samples": len(clean),
        "iterations": spec.iterations,
        "pruned_channels": pruned,
        "pruned": sum(len(c) for c in pruned.values()),
        "channels": sum(m.numel() for m in masks.values()),
    }
    return DefenseOutcome(report, repaired=True)
