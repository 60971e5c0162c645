"""A model definition as a user of `triggerlab audit` would write it, for the audit tests."""

from torch import nn

from triggerlab.models.small import BadNetCNN


def make_cnn(classes: int = 10) -> nn.Module:
    return BadNetCNN(1, (16, 16), classes)


def not_a_model() -> int:
    return 42
