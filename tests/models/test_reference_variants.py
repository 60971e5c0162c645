"""The references' code as published: reference 002's softmax-ending network and the input
normalisations of references 001 and 002 (docs/references.md)."""

import math

import pytest
import torch
from torch import nn

from triggerlab.config import load_config
from triggerlab.errors import ConfigError
from triggerlab.models import build_configured, build_model


def _pair(shape=(1, 28, 28), classes=10):
    """The plain network and its softmax-ending twin with the same weights."""
    torch.manual_seed(0)
    plain = build_model("small_cnn", shape[0], shape[1:], classes)
    quirk = build_model("small_cnn", shape[0], shape[1:], classes, {"output_softmax": True})
    quirk.load_state_dict(plain.state_dict())
    return plain.eval(), quirk.eval()


def test_the_softmax_ending_network_returns_the_probabilities_of_the_plain_ones_logits():
    plain, quirk = _pair()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits, probabilities = plain(x), quirk(x)
    assert torch.allclose(probabilities, logits.softmax(dim=1), atol=1e-6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(4))
    assert (probabilities >= 0).all()
    assert torch.equal(probabilities.argmax(dim=1), logits.argmax(dim=1))  # same predictions


def test_cross_entropy_on_the_softmax_output_is_the_double_softmax_loss_with_its_floor():
    """Reference 002's loss is CE(softmax(softmax(z))): with 10 classes it cannot fall below
    log(1 + 9 / e) ~ 1.46, reached by a one-hot first softmax, and its gradient vanishes
    there while the plain loss still pulls."""
    plain, quirk = _pair()
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(quirk(x), y)
    double = nn.functional.cross_entropy(plain(x).softmax(dim=1), y)
    assert torch.allclose(loss, double)
    floor = math.log(1 + 9 / math.e)
    saturated = torch.full((1, 10), -50.0)
    saturated[0, 3] = 50.0
    assert nn.functional.cross_entropy(saturated.softmax(dim=1), torch.tensor([3])).item() == (
        pytest.approx(floor, rel=1e-6)
    )
    assert loss.item() > floor
    wrong = saturated.clone().requires_grad_(True)  # confidently wrong: class 3, truth 0
    nn.functional.cross_entropy(wrong.softmax(dim=1), torch.tensor([0])).backward()
    assert wrong.grad.abs().max() < 1e-20  # the softmax saturated: nothing to learn from
    plain_wrong = saturated.clone().requires_grad_(True)
    nn.functional.cross_entropy(plain_wrong, torch.tensor([0])).backward()
    assert plain_wrong.grad.abs().max() > 0.9


def test_output_softmax_must_be_a_boolean():
    with pytest.raises(ConfigError, match="output_softmax must be true or false"):
        build_model("small_cnn", 1, (28, 28), 10, {"output_softmax": "yes"})


@pytest.mark.parametrize(
    ("setting", "mean", "std"),
    [
        ("half", (0.5,), (0.5,)),
        ("cifar10_ref001", (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
        ("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ],
)
def test_named_normalisations_of_the_references_code(setting, mean, std):
    channels = len(mean) if len(mean) == 3 else 1
    cfg = load_config(None, [f"model.normalization={setting}"]).model
    model, info = build_configured(cfg, (channels, 28, 28), 10)
    assert info.normalization == (mean, std)
    x = torch.rand(2, channels, 28, 28)
    expected = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    assert torch.allclose(model.adapt(x), expected)


def test_half_normalisation_maps_black_and_white_to_minus_one_and_one():
    cfg = load_config(None, ["model.normalization=half"]).model
    model, _ = build_configured(cfg, (3, 28, 28), 10)
    x = torch.stack([torch.zeros(3, 28, 28), torch.ones(3, 28, 28)])
    adapted = model.adapt(x)
    assert adapted[0].eq(-1).all() and adapted[1].eq(1).all()
