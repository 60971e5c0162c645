"""Model registry: a name and options in, an ``nn.Module`` that returns logits out."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from triggerlab.errors import ConfigError
from triggerlab.models.backbones import BACKBONES
from triggerlab.models.resnet_cifar import CifarResNet18
from triggerlab.models.small import BadNetCNN, LeNet5

MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": BadNetCNN,
    "lenet5": LeNet5,
    "resnet18_cifar": CifarResNet18,
    **BACKBONES,
}


def model_options(name: str) -> dict[str, Any]:
    """Keyword options a model accepts (``model.options``) and their defaults."""
    params = inspect.signature(MODELS[name]).parameters
    fixed = ("in_channels", "image_size", "num_outputs")
    return {n: p.default for n, p in params.items() if n not in fixed}


def build_model(
    name: str,
    in_channels: int,
    image_size: tuple[int, int],
    num_outputs: int,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a model and check with one dry forward pass that it accepts the input size."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        allowed = ", ".join(model_options(name)) or "none"
        raise ConfigError(
            f"model.options: unknown option(s) {', '.join(unknown)} for {name!r} "
            f"(allowed: {allowed})"
        )
    try:
        model = MODELS[name](in_channels, image_size, num_outputs, **options)
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, in_channels, *image_size))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"model.name: {name!r} cannot take {in_channels}x{image_size[0]}x{image_size[1]} "
            f"inputs with options {options} ({str(exc).splitlines()[0]}); "
            "use data.resize for a larger input or a smaller model"
        ) from exc
    model.train()
    return model


__all__ = ["MODELS", "build_model", "model_options"]
