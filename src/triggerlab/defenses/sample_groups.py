"""Poisoned-sample detectors look at the training set from the model's penultimate features,
one class at a time; regression has no classes, so its whole training set is one group."""

from __future__ import annotations

import torch

from triggerlab.defenses.base import DefenseInputs
from triggerlab.defenses.features import penultimate_features


def class_groups(labels: torch.Tensor) -> list[torch.Tensor]:
    """Indices of each class present in ``labels``."""
    return [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]


def features_and_groups(inputs: DefenseInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features ``[N, D]`` of the training set and a group label per sample."""
    train = inputs.training
    features = penultimate_features(inputs.model, train.images, inputs.device)
    if inputs.task.is_regression:
        return features, torch.zeros(len(train), dtype=torch.long)
    return features, train.targets
