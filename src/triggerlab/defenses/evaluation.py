"""One evaluation for every detector: how well its flags and scores find the poisoned items.

``labels`` mark the truly poisoned (triggered) items, ``scores`` rank suspicion
(higher = more suspicious) and ``flagged`` is the detector's decision.
"""

from __future__ import annotations

import math

import torch
from sklearn.metrics import roc_auc_score


def detection_metrics(
    labels: torch.Tensor, scores: torch.Tensor, flagged: torch.Tensor
) -> dict[str, float]:
    """TPR, FPR, precision and F1 of the flags; AUROC of the scores (nan with one class only)."""
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
