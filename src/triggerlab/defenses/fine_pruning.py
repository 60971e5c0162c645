"""Fine-pruning (Liu, Dolan-Gavitt and Garg, RAID 2018).

A backdoor hides in the neurons that clean inputs leave dormant: prune the
least active channels of the features the classifier reads, then fine-tune on
clean data.

Which features: the input of the classifier, i.e. the first linear layer that
runs after the network's last feature map (its channels, after pooling, or
flattened with their positions). The authors prune the last convolution's
channels, measuring their mean activation after its pooling (``pool3``,
kangliucn/Fine-pruning-defense ``face/conv_output_prune.py:35``); BackdoorBench
masks the input of the model's last child's first linear layer
(SCLBD/BackdoorBench ``defense/fp.py:295-346``). On a ResNet the classifier's
input is the last stage's output, shortcut included; the last registered
convolution is only the residual branch of the last block, and masking it leaves
the features the shortcut carries (what triggerlab pruned before). A model
without a linear layer falls back to the last convolution's output channels.

Activity is the mean of each channel's features over the defender's clean
images (BackdoorBench ``fp.py:312``; the mean of its positive part for the
convolution fallback). Two ways to choose how many:

* ``prune_ratio``: that share of the channels, least active first;
* ``acc_ratio`` (BackdoorBench's progressive pruning, ``fp.py:339-380``): prune
  ``ceil(step_ratio * C)`` more channels at a time, and keep the last count at
  which the clean accuracy changed by less than ``acc_ratio`` of its unpruned
  value. BackdoorBench measures that accuracy on the test set; here it is the
  defender's held-back clean data (a defence never sees the test set), and a
  count of k prunes k channels (BackdoorBench's ``seq_sort[0:num_pruned - 1]``
  prunes one fewer).

The mask stays on while fine-tuning; afterwards it is folded into the
classifier's weights (the pruned inputs' columns set to zero), so the repaired
model computes the same without any hook.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from triggerlab.catalogue.defenses import FinePruningSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome, retrain
from triggerlab.defenses.features import last_layer
from triggerlab.errors import ConfigError
from triggerlab.train.loop import forward_all, predict


@dataclass(frozen=True)
class PrunedFeatures:
    """The channels fine-pruning acts on: the input of ``layer`` (the classifier), in groups of
    ``per_channel`` features, or the output channels of ``layer`` (the convolution fallback)."""

    name: str
    layer: nn.Module
    channels: int
    per_channel: int = 1
    at_input: bool = True

    def features(self, channels: list[int], device: torch.device) -> torch.Tensor:
        """Indices of the classifier inputs that make up ``channels``."""
        index = torch.tensor(channels, dtype=torch.long, device=device)
        offsets = torch.arange(self.per_channel, device=device)
        return (index[:, None] * self.per_channel + offsets).flatten()

    def mask(self, channels: list[int]) -> torch.utils.hooks.RemovableHandle:
        """Zero ``channels`` from now on (a hook on ``layer``)."""
        if not self.at_input:
            return mask_channels(self.layer, channels)

        def zero_inputs(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[Any, ...]:
            x = args[0]
            keep = torch.ones(x.shape[-1], device=x.device, dtype=x.dtype)
            keep[self.features(channels, x.device)] = 0
            return (x * keep, *args[1:])

        return self.layer.register_forward_pre_hook(zero_inputs)

    @torch.no_grad()
    def fold(self, channels: list[int]) -> bool:
        """Zero the classifier's weights of the pruned inputs; False when there is no such
        weight (the convolution fallback keeps its mask)."""
        if not self.at_input or not channels:
            return self.at_input
        weight = self.layer.weight  # type: ignore[union-attr]
        weight[:, self.features(channels, weight.device)] = 0
        return True

    @torch.no_grad()
    def activity(
        self, model: nn.Module, images: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        """Mean activation ``[C]`` of each channel over ``images``."""
        if not self.at_input:
            return channel_activity(model, self.layer, images, device)
        total = torch.zeros(self.channels, dtype=torch.float64)

        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            grouped = args[0].detach().flatten(1).double().view(-1, self.channels, self.per_channel)
            total.add_(grouped.mean(dim=2).sum(dim=0).cpu())

        handle = self.layer.register_forward_pre_hook(record)
        try:
            forward_all(model, images, device)
        finally:
            handle.remove()
        return (total / images.shape[0]).float()


@torch.no_grad()
def pruned_features(model: nn.Module, image: torch.Tensor, device: torch.device) -> PrunedFeatures:
    """Where fine-pruning acts on ``model``, found by running it on ``image`` (uint8 [1+, C, H,
    W]): the first linear layer to run, on a flat input, after the last feature map."""
    names = {module: name for name, module in model.named_modules()}
    events: list[tuple[nn.Module, torch.Size, torch.Size | None]] = []

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, torch.Tensor):
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            events.append((module, output.shape, None if first is None else first.shape))

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        forward_all(model, image, device)
    finally:
        for handle in handles:
            handle.remove()
    maps = [i for i, (_, shape, _) in enumerate(events) if len(shape) == 4]
    if maps:
        _, (_, channels, height, width), _ = events[maps[-1]]
        for module, _, inputs in events[maps[-1] + 1 :]:
            if isinstance(module, nn.Linear) and inputs is not None and len(inputs) == 2:
                return classifier_input(names[module], module, channels, height * width)
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ConfigError(
            "defense.kind: fine_pruning needs a model with a linear classifier after its "
            "feature maps, or a convolution layer"
        )
    conv = last_conv(model)
    return PrunedFeatures(names[conv], conv, conv.out_channels, at_input=False)


def classifier_input(name: str, layer: nn.Linear, channels: int, positions: int) -> PrunedFeatures:
    """The classifier's inputs as channels: pooled (one feature each), flattened with their
    positions (channel-major, as ``flatten`` lays them out), or each input its own."""
    features = layer.in_features
    if features == channels * positions:
        return PrunedFeatures(name, layer, channels, positions)
    if features == channels:
        return PrunedFeatures(name, layer, channels)
    return PrunedFeatures(name, layer, features)


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The model's last registered convolution (Grad-CAM's layer; fine-pruning's fallback)."""
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


def least_active(activity: torch.Tensor) -> list[int]:
    """Channel indices from the least to the most active (ties: the lower index first)."""
    return torch.argsort(activity, stable=True).tolist()


def select_pruned_channels(
    model: nn.Module, images: torch.Tensor, ratio: float, device: torch.device
) -> list[int]:
    """The ``round(ratio * C)`` least active channels on ``images`` of the features
    fine-pruning acts on."""
    pruned = pruned_features(model, images[:1], device)
    order = least_active(pruned.activity(model, images, device))
    return sorted(order[: round(ratio * pruned.channels)])


def mask_channels(layer: nn.Module, channels: list[int]) -> torch.utils.hooks.RemovableHandle:
    """Zero the given output channels of ``layer`` from now on (a forward hook)."""

    def zero(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(output.shape[1], device=output.device, dtype=output.dtype)
        mask[channels] = 0
        return output * mask.view(1, -1, 1, 1)

    return layer.register_forward_hook(zero)


def clean_quality(
    model: nn.Module, inputs: DefenseInputs, images: torch.Tensor, targets: torch.Tensor
) -> float:
    """Clean accuracy on the defender's data (classification), or its clean error
    (regression): what progressive pruning must not change by ``acc_ratio``."""
    predictions = predict(model, inputs.task, images, inputs.device)
    if getattr(inputs.task, "is_regression", False):
        return float(inputs.task.error(predictions, targets).mean())  # type: ignore[attr-defined]
    return float((predictions == targets).double().mean())


def progressive_count(
    pruned: PrunedFeatures,
    order: list[int],
    inputs: DefenseInputs,
    acc_ratio: float,
    step_ratio: float,
) -> tuple[int, list[list[float]]]:
    """How many of ``order`` to prune: the last count, in steps of ``ceil(step_ratio * C)``,
    at which clean quality moved by less than ``acc_ratio`` of its unpruned value; and the
    ``[count, quality]`` curve measured on the way."""
    assert inputs.clean is not None
    images, targets = inputs.clean.images, inputs.clean.targets
    step = max(1, math.ceil(step_ratio * pruned.channels))
    first = clean_quality(inputs.model, inputs, images, targets)
    curve, kept = [[0, first]], 0
    for count in range(step, pruned.channels, step):
        handle = pruned.mask(order[:count])
        try:
            quality = clean_quality(inputs.model, inputs, images, targets)
        finally:
            handle.remove()
        curve.append([count, quality])
        if abs(quality - first) >= acc_ratio * max(abs(first), 1e-12):
            break
        kept = count
    return kept, curve


def run_fine_pruning(spec: FinePruningSpec, inputs: DefenseInputs) -> DefenseOutcome:
    """Prune the least active channels of the classifier's input on the clean data, then
    fine-tune with the mask on, then fold the mask into the classifier."""
    assert inputs.clean is not None
    model, clean = inputs.model, inputs.clean
    pruned = pruned_features(model, clean.images[:1], inputs.device)
    order = least_active(pruned.activity(model, clean.images, inputs.device))
    report: dict[str, Any] = {"pruned_layer": pruned.name}
    if spec.acc_ratio is None:
        count = round(spec.prune_ratio * pruned.channels)
    else:
        count, report["prune_curve"] = progressive_count(
            pruned, order, inputs, spec.acc_ratio, spec.step_ratio
        )
    channels = sorted(order[:count])
    handle = pruned.mask(channels)
    result = retrain(spec, inputs, clean.images, clean.targets)
    if pruned.fold(channels):
        handle.remove()
    result.pruned_channels = channels
    result.channels = pruned.channels
    return DefenseOutcome({**asdict(result), "lr": spec.lr, **report}, repaired=True)
