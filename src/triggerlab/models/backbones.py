"""torchvision's ImageNet architectures, fresh or with torchvision's ImageNet weights.

Fresh: the first convolution is rebuilt when the input is not RGB and the last
layer gets ``num_outputs`` units. With ImageNet weights (``model.pretrained:
imagenet``): the architecture is built as the weights were trained, loaded from
torchvision's cache (``TORCH_HOME``, downloaded once when missing), and only the
final linear layer is replaced; grey inputs are repeated to RGB by the model's
input adapter instead of rebuilding its first convolution.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import nn

from triggerlab.errors import ConfigError
from triggerlab.models.pretrained import Weights, cached_download, load_matching, read_state
from triggerlab.models.transfer import replace_final_linear


def tvm() -> ModuleType:
    """``torchvision.models``, imported when one of its models is built: the import pulls in
    ``torch._dynamo`` (seconds), which a run of a small CNN must not wait for."""
    from torchvision import models

    return models


def _replace_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )


def alexnet(
    in_channels: int, image_size: tuple[int, int], num_outputs: int, dropout: float = 0.5
) -> nn.Module:
    model = tvm().alexnet(weights=None, num_classes=num_outputs, dropout=dropout)
    model.features[0] = _replace_conv(model.features[0], in_channels)
    return model


class AlexNetSingleFC(nn.Module):
    """Reference 000's gaze network: AlexNet's five convolutions, then one linear layer.

    The three fully connected layers become a single one (dropout 0.5 before it);
    adaptive pooling to 6x6 lets it take any input of at least 63 pixels.
    """

    def __init__(
        self, in_channels: int, image_size: tuple[int, int], num_outputs: int, dropout: float = 0.5
    ) -> None:
        super().__init__()
        base = tvm().alexnet(weights=None)
        base.features[0] = _replace_conv(base.features[0], in_channels)
        self.features = base.features
        self.pool = nn.AdaptiveAvgPool2d((6, 6))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(256 * 6 * 6, num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def _vgg(name: str) -> Callable[..., nn.Module]:
    def build(
        in_channels: int, image_size: tuple[int, int], num_outputs: int, dropout: float = 0.5
    ) -> nn.Module:
        model = getattr(tvm(), name)(weights=None, num_classes=num_outputs, dropout=dropout)
        model.features[0] = _replace_conv(model.features[0], in_channels)
        return model

    build.__doc__ = f"torchvision {name} with adapted input and output."
    return build


def _resnet(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, image_size: tuple[int, int], num_outputs: int) -> nn.Module:
        model = getattr(tvm(), name)(weights=None, num_classes=num_outputs)
        model.conv1 = _replace_conv(model.conv1, in_channels)
        return model

    build.__doc__ = f"torchvision {name} with adapted input and output."
    return build


def googlenet(in_channels: int, image_size: tuple[int, int], num_outputs: int) -> nn.Module:
    model = tvm().googlenet(
        weights=None,
        num_classes=num_outputs,
        aux_logits=False,
        init_weights=True,
        transform_input=False,
    )
    model.conv1.conv = _replace_conv(model.conv1.conv, in_channels)
    return model


vgg11 = _vgg("vgg11")
vgg11_bn = _vgg("vgg11_bn")
vgg16 = _vgg("vgg16")
vgg16_bn = _vgg("vgg16_bn")
vgg19 = _vgg("vgg19")
vgg19_bn = _vgg("vgg19_bn")
resnet18 = _resnet("resnet18")
resnet50 = _resnet("resnet50")
resnet152 = _resnet("resnet152")

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "alexnet": alexnet,
    "alexnet_1fc": AlexNetSingleFC,
    "vgg11": vgg11,
    "vgg11_bn": vgg11_bn,
    "vgg16": vgg16,
    "vgg16_bn": vgg16_bn,
    "vgg19": vgg19,
    "vgg19_bn": vgg19_bn,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet152": resnet152,
    "googlenet": googlenet,
}


def _drop_aux_heads(model: nn.Module) -> None:
    """GoogLeNet's ImageNet weights include the auxiliary heads; transfer learning uses none."""
    model.aux_logits = False  # type: ignore[assignment]
    model.aux1 = None  # type: ignore[assignment]
    model.aux2 = None  # type: ignore[assignment]


# torchvision name -> keyword arguments of the architecture the ImageNet weights were trained as
IMAGENET_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": True, "transform_input": True, "init_weights": False},
}
FINISH: dict[str, Callable[[nn.Module], None]] = {"googlenet": _drop_aux_heads}


def imagenet_architecture(
    name: str,
    num_outputs: int,
    options: dict[str, Any],
    state: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """``name`` as its ImageNet weights were trained, ``state`` loaded when given, then made
    ready for transfer (auxiliary heads dropped, a new final layer with ``num_outputs``)."""
    classes = len(tvm().get_model_weights(name).DEFAULT.meta["categories"])
    model = tvm().get_model(
        name, weights=None, num_classes=classes, **IMAGENET_KWARGS.get(name, {}), **options
    )
    if state is not None:
        load_matching(model, state)
    FINISH.get(name, lambda _: None)(model)
    replace_final_linear(model, num_outputs)
    return model


def torchvision_imagenet(name: str) -> Callable[..., tuple[nn.Module, Weights]]:
    """A loader of ``name`` with torchvision's default ImageNet weights and a new final layer."""

    def load(num_outputs: int, options: dict[str, Any]) -> tuple[nn.Module, Weights]:
        weights = tvm().get_model_weights(name).DEFAULT
        path = cached_download(weights.url, f"ImageNet weights of {name} ({weights})")
        try:
            model = imagenet_architecture(name, num_outputs, options, read_state(path))
        except ConfigError as exc:
            raise ConfigError(f"model.pretrained: {path}: {exc}") from None
        transform = weights.transforms()
        normalization = (tuple(transform.mean), tuple(transform.std))
        return model, Weights(f"torchvision {weights}", path, *normalization)

    return load


IMAGENET: dict[str, Callable[..., tuple[nn.Module, Weights]]] = {
    name: torchvision_imagenet(name)
    for name in BACKBONES
    if name != "alexnet_1fc"  # reference 000's head is its own: no ImageNet weights fit it
}
