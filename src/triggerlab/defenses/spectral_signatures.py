"""Spectral signatures (Tran, Li and Madry, 2018): poisoned samples leave a trace along the top
singular direction of their class's centred penultimate features.

Each sample's score is its squared projection on that direction; the top
``1.5 x expected_fraction`` of each class are flagged.
"""

from __future__ import annotations

import math

import torch

from triggerlab.catalogue.defenses import SpectralSignaturesSpec
from triggerlab.defenses.base import DefenseInputs, DefenseOutcome
from triggerlab.defenses.sample_groups import class_groups, features_and_groups


def flagged_count(expected_fraction: float, size: int) -> int:
    """``ceil(1.5 * expected_fraction * size)``, the product rounded first: in floating point
    ``1.5 * 0.1 * 20`` is 3.0000000000000004, whose ceiling would flag a fourth sample."""
    return math.ceil(round(1.5 * expected_fraction * size, 9))


def spectral_signatures(
    features: torch.Tensor, labels: torch.Tensor, expected_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and flags ``[N]``: per class, the squared projection on the top singular vector."""
    scores = torch.zeros(features.shape[0], dtype=torch.float64)
    flagged = torch.zeros(features.shape[0], dtype=torch.bool)
    for index in class_groups(labels):
        centred = features[index].double() - features[index].double().mean(dim=0)
        if index.numel() < 2:
            continue
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        score = (centred @ vh[0]) ** 2
        scores[index] = score
        count = min(index.numel(), flagged_count(expected_fraction, index.numel()))
        flagged[index[torch.argsort(score, descending=True)[:count]]] = True
    return scores, flagged


def run_spectral_signatures(spec: SpectralSignaturesSpec, inputs: DefenseInputs) -> DefenseOutcome:
    features, groups = features_and_groups(inputs)
    scores, flagged = spectral_signatures(features, groups, spec.expected_fraction)
    return DefenseOutcome({"clean_samples": 0}, sample_scores=(scores, flagged))
