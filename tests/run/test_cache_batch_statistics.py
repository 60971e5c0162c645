"""The frozen-feature cache is exact only when the frozen body is a fixed function of the
image while the tail trains: a body whose batch norms use each batch's statistics (reference
001's code calls ``model.train()`` on everything: ``model.frozen_mode: train``) or whose
dropout is on is not. ``batch_dependent`` names those modules; ``why_not_cached`` and the cost
planner refuse the cache with the first of them (tests/run/test_cache_and_training_mode.py)."""

from torch import nn

from triggerlab.models.transfer import TransferModel
from triggerlab.run.inputs import batch_dependent


def network(*middle: nn.Module):
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        *middle,
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_a_body_of_fixed_functions_has_nothing_batch_dependent():
    model = TransferModel(network())
    plan = model.freeze("classifier")
    assert batch_dependent(model, plan.cut) == []


def test_batch_norms_and_dropout_of_the_body_are_named_and_the_tails_are_not():
    model = TransferModel(network(nn.BatchNorm2d(4), nn.Dropout2d(0.1)))
    plan = model.freeze("classifier")
    found = batch_dependent(model, plan.cut)
    assert [name.split(" ")[1] for name in found] == ["(BatchNorm2d)", "(Dropout2d)"]
    tail = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2))
    with_tail = TransferModel(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), tail)
    )
    assert batch_dependent(with_tail, tail) == []
