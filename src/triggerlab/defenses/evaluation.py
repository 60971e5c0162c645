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

import numpy as np
import torch
from torch import nn

from triggerlab.catalogue.defenses import DefenseSpec
from triggerlab.defenses.base import DefenseOutcome, InputDetector

if TYPE_CHECKING:
    from triggerlab.attack.tasks import Task
    from triggerlab.data.dataset import ImageDataset


FPR_BUDGETS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_5pct_fpr": 0.05}
ROC_POINTS = 201  # at most this many (FPR, TPR) points are kept for the report's curves


def roc_points(labels: torch.Tensor, scores: torch.Tensor) -> tuple[list[float], list[float]]:
    """The ROC curve of the scores (FPR, TPR), thinned to at most ``ROC_POINTS`` points."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels.numpy(), scores.double().numpy(), drop_intermediate=True)
    if len(fpr) > ROC_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [float(v) for v in fpr], [float(v) for v in tpr]


def tpr_at_fpr(labels: torch.Tensor, scores: torch.Tensor, budget: float) -> float:
    """The highest TPR any threshold reaches with an FPR of at most ``budget``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels.numpy(), scores.double().numpy(), drop_intermediate=False)
    return float(tpr[fpr <= budget + 1e-12].max())


def detection_metrics(
    labels: torch.Tensor, scores: torch.Tensor, flagged: torch.Tensor
) -> dict[str, float]:
    """TPR, FPR, precision and F1 of the flags; AUROC of the scores and the TPR the scores
    reach at 1 % and 5 % FPR (nan with one class only)."""
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
    at_budget = {
        name: tpr_at_fpr(labels, scores, budget) if both else math.nan
        for name, budget in FPR_BUDGETS.items()
    }
    return {"tpr": tpr, "fpr": fpr, "precision": precision, "f1": f1, "auroc": auroc, **at_budget}


def detection_section(
    labels: torch.Tensor, scores: torch.Tensor, flagged: torch.Tensor
) -> dict[str, Any]:
    """The detection metrics and, for the report, the ROC curve."""
    result: dict[str, Any] = {"detection": detection_metrics(labels, scores, flagged)}
    if labels.any() and (~labels).any():
        fpr, tpr = roc_points(labels.bool(), scores)
        result["roc"] = {"fpr": fpr, "tpr": tpr}
    return result


def input_detection(
    detector: InputDetector, task: Task, test: ImageDataset, triggered_test: torch.Tensor
) -> dict[str, Any]:
    """Every clean test input against the triggered inputs the attack is meant for."""
    attacked = task.attack_mask(test.targets)
    scores = torch.cat([detector.score(test.images), detector.score(triggered_test[attacked])])
    labels = torch.cat(
        [
            torch.zeros(len(test), dtype=torch.bool),
            torch.ones(int(attacked.sum()), dtype=torch.bool),
        ]
    )
    return detection_section(labels, scores, detector.flag(scores))


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
        result.update(input_detection(outcome.input_detector, task, test, triggered_test))
    if outcome.sample_scores is not None:
        scores, flags = outcome.sample_scores
        result.update(
            training_samples=int(poisoned.numel()),
            poisoned=int(poisoned.sum()),
            flagged=int(flags.sum()),
        )
        result.update(detection_section(poisoned, scores, flags))
    if outcome.suspect_classes is not None and isinstance(target, int):
        result["target_flagged"] = target in outcome.suspect_classes
        if outcome.class_anomaly is not None:
            index = float(outcome.class_anomaly[target])  # nan: its search never succeeded
            result["target_anomaly_index"] = None if math.isnan(index) else index
    return result
