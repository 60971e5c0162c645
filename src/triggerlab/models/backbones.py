"""torchvision's ImageNet architectures, adapted to any input channels and output count.

The first convolution is rebuilt when the input is not RGB and the last layer
gets ``num_outputs`` units. Weights are freshly initialised (no download).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision import models as tvm


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
    model = tvm.alexnet(weights=None, num_classes=num_outputs, dropout=dropout)
    model.features[0] = _replace_conv(model.features[0], in_channels)
    return model


def _vgg(factory: Callable[..., tvm.VGG]) -> Callable[..., nn.Module]:
    def build(
        in_channels: int, image_size: tuple[int, int], num_outputs: int, dropout: float = 0.5
    ) -> nn.Module:
        model = factory(weights=None, num_classes=num_outputs, dropout=dropout)
        model.features[0] = _replace_conv(model.features[0], in_channels)
        return model

    build.__doc__ = f"torchvision {factory.__name__} with adapted input and output."
    return build


def _resnet(factory: Callable[..., tvm.ResNet]) -> Callable[..., nn.Module]:
    def build(in_channels: int, image_size: tuple[int, int], num_outputs: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_outputs)
        model.conv1 = _replace_conv(model.conv1, in_channels)
        return model

    build.__doc__ = f"torchvision {factory.__name__} with adapted input and output."
    return build


def googlenet(in_channels: int, image_size: tuple[int, int], num_outputs: int) -> nn.Module:
    model = tvm.googlenet(
        weights=None,
        num_classes=num_outputs,
        aux_logits=False,
        init_weights=True,
        transform_input=False,
    )
    model.conv1.conv = _replace_conv(model.conv1.conv, in_channels)
    return model


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "alexnet": alexnet,
    "vgg11": _vgg(tvm.vgg11),
    "vgg11_bn": _vgg(tvm.vgg11_bn),
    "vgg16": _vgg(tvm.vgg16),
    "vgg16_bn": _vgg(tvm.vgg16_bn),
    "vgg19": _vgg(tvm.vgg19),
    "vgg19_bn": _vgg(tvm.vgg19_bn),
    "resnet18": _resnet(tvm.resnet18),
    "resnet50": _resnet(tvm.resnet50),
    "resnet152": _resnet(tvm.resnet152),
    "googlenet": googlenet,
}
