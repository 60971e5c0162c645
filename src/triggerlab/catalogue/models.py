"""Model declarations: each architecture's name, options and the factory that builds it.

A factory is named by import path and takes ``(in_channels, image_size, num_outputs,
**options)``; it is imported only when a model is built, so validating a config or
listing the models never imports torch. ``timm/<name>`` reaches any timm architecture
(timm checks its own options). Adding a model is one factory module in
``triggerlab/models/`` and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TIMM_PREFIX = "timm/"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: str  # "module:attribute" of the fresh-weight factory
    summary: str
    options: dict[str, object] = field(default_factory=dict)  # model.options and defaults
    imagenet: bool = False  # model.pretrained: imagenet is available


def _torchvision(name: str, summary: str, **options: object) -> ModelEntry:
    return ModelEntry(
        name, f"triggerlab.models.backbones:{name}", summary, dict(options), imagenet=True
    )


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            "small_cnn",
            "triggerlab.models.small:BadNetCNN",
            "the network of the public BadNets implementation reference 002 builds on "
            "(output_softmax: true ends it in a softmax, reference 002's quirk)",
            {"width": 16, "hidden": 512, "output_softmax": False},
        ),
        ModelEntry(
            "lenet5",
            "triggerlab.models.small:LeNet5",
            "LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling",
        ),
        ModelEntry(
            "resnet18_cifar",
            "triggerlab.models.resnet_cifar:CifarResNet18",
            "ResNet-18 for CIFAR-sized inputs",
            {"width": 64},
        ),
        ModelEntry(
            "preact_resnet18",
            "triggerlab.models.preact_resnet:PreActResNet18",
            "pre-activation ResNet-18, BackdoorBench's CIFAR-10 network",
            {"width": 64},
        ),
        ModelEntry(
            "efficientnet_lite0",
            "triggerlab.models.timm_models:efficientnet_lite0",
            "TensorFlow's EfficientNet-Lite0 (timm's tf_efficientnet_lite0)",
            {"drop_rate": 0.2},
            imagenet=True,
        ),
        _torchvision("alexnet", "torchvision alexnet with adapted input and output", dropout=0.5),
        ModelEntry(
            "alexnet_1fc",
            "triggerlab.models.backbones:AlexNetSingleFC",
            "reference 000's gaze network: AlexNet's five convolutions, then one linear layer",
            {"dropout": 0.5},
        ),
        *(
            _torchvision(name, f"torchvision {name} with adapted input and output", dropout=0.5)
            for name in ("vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
        ),
        *(
            _torchvision(name, f"torchvision {name} with adapted input and output")
            for name in ("resnet18", "resnet50", "resnet152", "googlenet")
        ),
    )
}
