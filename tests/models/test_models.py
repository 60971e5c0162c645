"""Every architecture builds for its inputs and returns one logit per class."""

import pytest
import torch

from triggerlab.errors import ConfigError
from triggerlab.models import MODELS, build_model

SIZES = {"alexnet": 64, "alexnet_1fc": 64, "googlenet": 32}
# Every model on RGB; grey input on one model per adapter (the deep variants share it).
CASES = [(name, 3) for name in sorted(MODELS)] + [
    (name, 1)
    for name in (
        "small_cnn",
        "lenet5",
        "resnet18_cifar",
        "alexnet",
        "vgg11_bn",
        "resnet18",
        "googlenet",
    )
]


@pytest.mark.parametrize(("name", "channels"), CASES)
def test_model_outputs_logits_for_any_channels(name, channels):
    size = SIZES.get(name, 32)
    model = build_model(name, channels, (size, size), 7)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 7)
    assert not torch.allclose(out.sum(dim=1), torch.ones(2))  # logits, not probabilities


def test_small_cnn_is_the_reference_layout():
    model = build_model("small_cnn", 1, (28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [16, 32]
    assert [lin.in_features for lin in linears] == [
        512,
        512,
    ]  # 32 x 4 x 4 at 28x28, as the reference
    assert not any(isinstance(m, torch.nn.Softmax) for m in model.modules())


def test_reference_000_alexnet_has_one_linear_layer_and_any_input_size():
    model = build_model("alexnet_1fc", 3, (96, 80), 2)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(convs) == 5 and len(linears) == 1 and [d.p for d in dropouts] == [0.5]
    model.eval()
    assert model(torch.rand(1, 3, 96, 80)).shape == (1, 2)


def test_preact_resnet18_is_backdoorbench_s_model():
    """BackdoorBench's PreAct-ResNet-18 has 11,171,146 parameters for CIFAR-10: 1x1
    convolution shortcuts without batch norm and no batch norm after the last block."""
    model = build_model("preact_resnet18", 3, (32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == 11_171_146
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(batch_norms) == 16  # two per block, eight blocks
    shortcuts = [m for m in model.modules() if getattr(m, "shortcut", None) is not None]
    assert len(shortcuts) == 3 and all(s.shortcut.kernel_size == (1, 1) for s in shortcuts)
    assert build_model("preact_resnet18", 3, (32, 32), 100).fc.out_features == 100


def test_too_small_input_is_a_config_error():
    with pytest.raises(ConfigError, match="model.name: 'small_cnn' cannot take 1x8x8"):
        build_model("small_cnn", 1, (8, 8), 10)


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("lenet5", 1, (28, 28), 10, {"depth": 3})
    assert build_model("small_cnn", 1, (28, 28), 10, {"width": 8}) is not None
