"""Transfer learning: an input adapter around a network, and freeze policies (reference 001).

``TransferModel`` takes images in [0, 1] as triggers and stored images are, repeats a
grey channel for a network pretrained on RGB (its first convolution is never rebuilt),
and applies the weights' own normalisation. A freeze policy chooses which parameters
train; frozen parts run in evaluation mode, so that batch statistics and dropout are
those of the pretrained network:

* ``classifier``: only the final linear layer trains;
* ``classifier_and_bn``: the final linear layer and every batch-norm layer train
  (reference 001's policy for ResNet, VGG and GoogLeNet);
* ``head``: the network's whole classifier module trains (reference 001's AlexNet policy);
* ``{unfreeze_last: N}``: the last N parameter tensors train (reference 001's sweep);
* ``ref001_paper`` / ``ref001_code``: reference 001's per-backbone sets, as its paper states
  them and as its code applied them (``models/ref001_freeze.py``).

``frozen_mode: train`` instead runs the whole network in training mode, as reference 001's
code did (``model.train()``): frozen batch norms then normalise with batch statistics and
update their running statistics, and every dropout is active.

A layer without parameters (dropout, activation, pooling) follows the next layer that
has them in the same container: it runs in training mode when that layer trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from triggerlab.errors import ConfigError
from triggerlab.models import ref001_freeze
from triggerlab.models.crops import Crops

BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)
HEAD_NAMES = ("classifier", "fc", "head")  # torchvision and timm name their classifier module so


def final_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The network's last linear layer (its classifier) and its dotted name."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("model.freeze: the model has no linear layer to train")
    return linears[-1]  # type: ignore[return-value]


def head_module(net: nn.Module) -> tuple[str, nn.Module]:
    """The network's classifier module: its ``classifier``, ``fc`` or ``head`` attribute."""
    for name in HEAD_NAMES:
        module = getattr(net, name, None)
        if isinstance(module, nn.Module) and any(True for _ in module.parameters()):
            return name, module
    raise ConfigError(
        "model.freeze: 'head' needs a classifier module (an attribute named classifier, fc or "
        f"head); {type(net).__name__} has none: use 'classifier' or {{unfreeze_last: N}}"
    )


def replace_final_linear(net: nn.Module, outputs: int) -> None:
    """Give the network a fresh final linear layer with ``outputs`` units."""
    name, old = final_linear(net)
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(
        parent,
        name.rpartition(".")[2],
        nn.Linear(old.in_features, outputs, bias=old.bias is not None),
    )


@dataclass
class FreezePlan:
    """What a freeze policy leaves trainable, and which layers run in training mode."""

    policy: str
    trainable: int
    frozen: int
    train_leaves: list[nn.Module] = field(default_factory=list)
    cut: nn.Module | None = None  # the trainable tail whose input the frozen body computes
    cut_name: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "freeze": self.policy,
            "trainable_parameters": self.trainable,
            "frozen_parameters": self.frozen,
        }


def _trainable_names(net: nn.Module, policy: Any) -> tuple[set[str], nn.Module | None, str]:
    """Parameter names the policy trains, and the tail module when the policy is a cut."""
    names = [n for n, _ in net.named_parameters()]
    if policy == "ref001_paper":
        policy = ref001_freeze.paper_policy(net)
    if policy == "ref001_code":
        return ref001_freeze.code_trainable(net, final_linear(net)[0]), None, ""
    if isinstance(policy, str):
        if policy == "classifier" or policy == "classifier_and_bn":
            cut_name, cut = final_linear(net)
            chosen = {f"{cut_name}.{n}" for n, _ in cut.named_parameters()}
            if policy == "classifier":
                return chosen, cut, cut_name
            for module_name, module in net.named_modules():
                if isinstance(module, BATCH_NORMS):
                    chosen |= {f"{module_name}.{n}" for n, _ in module.named_parameters()}
            return chosen, None, ""
        cut_name, cut = head_module(net)
        return {f"{cut_name}.{n}" for n, _ in cut.named_parameters()}, cut, cut_name
    count = policy.unfreeze_last
    if count > len(names):
        raise ConfigError(
            f"model.freeze.unfreeze_last: {count} exceeds the model's {len(names)} parameter "
            f"tensors (expected 1 to {len(names)})"
        )
    return set(names[len(names) - count :]), None, ""


def plan_freeze(net: nn.Module, policy: Any, fresh: Sequence[str] = ()) -> FreezePlan:
    """Set ``requires_grad`` by the policy and work out the layers that train.

    ``fresh`` names modules built new (not pretrained): they train whatever the policy, and
    a tail cut below them is no cut.
    """
    chosen, cut, cut_name = _trainable_names(net, policy)
    for module_name in fresh:
        module = net.get_submodule(module_name)
        chosen |= {f"{module_name}.{n}" for n, _ in module.named_parameters()}
        cut, cut_name = None, ""
    for name, param in net.named_parameters():
        param.requires_grad_(name in chosen)
    leaves = [(n, m) for n, m in net.named_modules() if not any(True for _ in m.children())]
    train_leaves: list[nn.Module] = []
    following = (None, False)  # the parent of the next layer with parameters, and if it trains
    for name, leaf in reversed(leaves):
        parent = name.rpartition(".")[0]
        params = list(leaf.parameters(recurse=False))
        if params:
            following = (parent, any(p.requires_grad for p in params))
        if following[1] and following[0] == parent:
            train_leaves.append(leaf)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    text = policy if isinstance(policy, str) else f"unfreeze_last {policy.unfreeze_last}"
    return FreezePlan(text, trainable, frozen, train_leaves, cut, cut_name)


class TransferModel(nn.Module):
    """A network behind an input adapter (channel repeat, normalisation), with a freeze plan."""

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        repeat_channels: int | None = None,
        frozen_mode: str = "eval",
        crops: Crops | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.repeat_channels = repeat_channels
        self.frozen_mode = frozen_mode  # "eval": frozen layers as pretrained; "train": all train
        self.crops = crops  # the view of the stored image the network sees, per mode
        self.register_buffer("mean", None if mean is None else torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", None if std is None else torch.tensor(std).view(1, -1, 1, 1))
        self.plan: FreezePlan | None = None

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] as the network expects them."""
        if self.crops is not None:
            x = self.crops(x, self.training)
        if self.repeat_channels is not None and x.shape[1] == 1:
            x = x.expand(-1, self.repeat_channels, -1, -1)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapt(x))

    def freeze(self, policy: Any, fresh: Sequence[str] = ()) -> FreezePlan:
        self.plan = plan_freeze(self.net, policy, fresh)
        self.train(self.training)
        return self.plan

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        if self.plan is not None and mode and self.frozen_mode == "eval":
            self.net.eval()  # frozen parts, and functional dropout keyed to the root, stay off
            for leaf in self.plan.train_leaves:
                leaf.train(True)
        return self
