"""Reference 001's freeze sets, as its paper states them and as its published code applied them.

Both are per-backbone rules for torchvision's AlexNet, VGG, ResNet and GoogLeNet (the four
networks of reference 001) and answer "which parameter tensors train". docs/references.md
(reference 001, item 3) cites the authors' code line by line; in short:

* ``ref001_paper`` (sections 4.1 and 4.3.2 of the paper): AlexNet trains its whole classifier
  module (triggerlab's ``head``); the others train the last linear layer and every batch
  norm (``classifier_and_bn``).
* ``ref001_code`` (the authors' ``freeze_layers`` and the lines after it):

  - VGG: the loop pairs ``features.parameters()`` with the modules of ``features`` in one
    ``zip`` and trains a tensor when the *module at the same position* is a batch norm.
    ``features`` has fewer modules than parameter tensors, so the pairing drifts and stops
    early; the unvisited tail of ``features`` and the whole classifier (never visited) keep
    their default, trainable. On VGG-19-BN: all three linear layers, 14 convolution tensors
    (8,371,008 parameters) and 13 of the 32 batch-norm tensors.
  - AlexNet: every tensor after the eighth trains (``num > 7``): the last convolution and
    the classifier, ``{unfreeze_last: 8}``.
  - ResNet and GoogLeNet: a tensor trains iff ``'bn'`` is in its name, so ResNet's four
    downsample batch norms (``layerN.0.downsample.1``) stay frozen.

  The new last layer trains in both (the authors replace it after freezing).

The authors also call ``model.train()`` on the whole network, so frozen batch norms use
batch statistics and dropout before frozen layers is active: that is ``model.frozen_mode:
train``, a setting of its own so that the two differences can be measured apart.
"""

from __future__ import annotations

from torch import nn

from triggerlab.errors import ConfigError

POLICIES = ("ref001_paper", "ref001_code")


def backbone_kind(net: nn.Module) -> str:
    """Which of reference 001's four torchvision families ``net`` is (by exact type, as the
    authors' code tests it), or ConfigError naming the policy's scope."""
    from torchvision import models  # imported only when one of these policies is asked for

    kinds = {
        models.AlexNet: "alexnet",
        models.VGG: "vgg",
        models.ResNet: "resnet",
        models.GoogLeNet: "googlenet",
    }
    kind = kinds.get(type(net))
    if kind is None:
        raise ConfigError(
            f"model.freeze: {'/'.join(POLICIES)} are reference 001's rules for torchvision's "
            f"AlexNet, VGG, ResNet and GoogLeNet; {type(net).__name__} is none of them "
            "(use classifier, classifier_and_bn, head or {unfreeze_last: N})"
        )
    return kind


def paper_policy(net: nn.Module) -> str:
    """The triggerlab policy that is the paper's text for this backbone."""
    return "head" if backbone_kind(net) == "alexnet" else "classifier_and_bn"


def code_trainable(net: nn.Module, final_linear_name: str) -> set[str]:
    """Names of the parameter tensors the authors' code leaves trainable in ``net``.

    ``final_linear_name`` is the replaced last layer, which trains whatever the rule says.
    """
    kind = backbone_kind(net)
    names = [name for name, _ in net.named_parameters()]
    head = {n for n in names if n.startswith(f"{final_linear_name}.")}
    if kind == "alexnet":
        return set(names[8:]) | head  # enumerate(named_parameters()), num > 7
    if kind in ("resnet", "googlenet"):
        return {n for n in names if "bn" in n} | head
    return _vgg_zip(net) | head


def _vgg_zip(net: nn.Module) -> set[str]:
    """The VGG rule: ``zip(features.parameters(), features)``, trainable where the paired
    module is a BatchNorm2d; tensors the zip never reaches keep requires_grad (True)."""
    features = net.get_submodule("features")
    tensors = [f"features.{name}" for name, _ in features.named_parameters()]
    modules = list(features)
    chosen = {t for t, m in zip(tensors, modules, strict=False) if type(m) is nn.BatchNorm2d}
    unvisited = tensors[len(modules) :]
    outside = {n for n, _ in net.named_parameters() if not n.startswith("features.")}
    return chosen | set(unvisited) | outside
