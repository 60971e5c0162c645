"""The one evaluation of every defence: what its outcome achieved against the actual attack.

This module, not the defences, sees the test set and which training samples
were poisoned. A repair is measured by every task metric before and after; a
detector by how well its scores and flags find the poisoned or triggered
items (``labels`` mark the truly poisoned ones, ``scores`` rank suspicion,
higher = more suspicious, and ``flagged`` is the detector's decision); a
model inspection by whether it names the attacker's target class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from triggerlab.defenses.base import DefenseOutcome, DefenseSpec, InputDetector

if TYPE_CHECKING:
    from triggerlab.data.dataset import ImageDataset
    from triggerlab.tasks import Task


def detection_metrics(
    labels: torch.Tensor, scores: torch.Tensor, flagged: torch.Tensor
) -> dict[str, float]:
    """TPR, FPR, precision and F1 of the flags; AUROC of the scores (nan with one class only)."""
    from sklearn.metrics import roc_auc_score

    labels, flagged = labels.bool(), flagged.bool()
    tp = int((flagged & labels).sum())
    fp = int((flagged & ~labels).sum())
    fn = int((~flagged & labels).sum())
    tn = int((~flagged & ~labels).sum())
    tpr = tp / (tp + fn) if tp + fn else math.nan
    fpr = fp / (fp + tn) if fp + tn else math.nan
    precision = tp / (tp + fp) if tp + fp else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    both = labels.any() and (~labels).any()
    auroc = float(roc_auc_score(labels.numpy(), scores.double().numpy())) if both else math.nan
    return {"tpr": tpr, "fpr": fpr, "precision": precision, "f1": f1, "auroc": auroc}


def input_detection(
    detector: InputDetector, task: Task, test: ImageDataset, triggered_test: torch.Tensor
) -> dict[str, float]:
    """Every clean test input against the triggered inputs the attack is meant for."""
    attacked = task.attack_mask(test.targets)
    scores = torch.cat([detector.score(test.images), detector.score(triggered_test[attacked])])
    labels = torch.cat(
        [
            torch.zeros(len(test), dtype=torch.bool),
            torch.ones(int(attacked.sum()), dtype=torch.bool),
        ]
    )
    return detection_metrics(labels, scores, detector.flag(scores))


def measure_defense(
    spec: DefenseSpec,
    outcome: DefenseOutcome,
    *,
    model: nn.Module,
    task: Task,
    before: dict[str, float],
    evaluate: Callable[[nn.Module], dict[str, float]],
    test: ImageDataset,
    triggered_test: torch.Tensor,
    poisoned: torch.Tensor,
    target: int | list[float],
) -> dict[str, Any]:
    """The ``defense`` section of summary.json: settings, budget and what each part achieved.

    ``poisoned`` marks the poisoned samples of the training set the defence saw.
    """
    result: dict[str, Any] = {**spec.model_dump(mode="json"), **outcome.report}
    if outcome.repaired:
        result.update(before=before, after=evaluate(model))
    if outcome.input_detector is not None:
        result["detection"] = input_detection(outcome.input_detector, task, test, triggered_test)
    if outcome.sample_scores is not None:
        scores, flags = outcome.sample_scores
        result.update(
            training_samples=int(poisoned.numel()),
            poisoned=int(poisoned.sum()),
            flagged=int(flags.sum()),
            detection=detection_metrics(poisoned, scores, flags),
        )
    if outcome.suspect_classes is not None and isinstance(target, int):
        result["target_flagged"] = target in outcome.suspect_classes
        if outcome.class_anomaly is not None:
            index = float(outcome.class_anomaly[target])  # nan: its search never succeeded
            result["target_anomaly_index"] = None if math.isnan(index) else index
    return result
