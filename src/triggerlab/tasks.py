"""Classification: the loss, predictions and the attack metrics of DESIGN.md.

* CA: accuracy on the clean test set.
* ASR: over triggered test samples the attack applies to (true label not the
  target for all-to-one and clean-label; restricted to ``source_classes`` when
  given), the fraction predicted as the attacker's label. For all-to-all the
  attacker's label is ``(y + 1) mod K``.
* asr_all: the same fraction over every triggered test sample, target class
  included (for all-to-all it equals ASR unless sources are restricted).
* RA: over the samples ASR counts, the fraction still predicted as the true label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from triggerlab.config import PoisonConfig
from triggerlab.poison import attack_labels

METRIC_NAMES = ("clean_acc", "asr", "asr_all", "robust_acc")


class ClassificationTask:
    def __init__(self, poison: PoisonConfig, num_classes: int) -> None:
        self.poison = poison
        self.num_classes = num_classes

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=1)

    def attack_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Test samples the attack is measured on (ASR and RA)."""
        mask = torch.ones_like(labels, dtype=torch.bool)
        if self.poison.source_classes is not None:
            mask = torch.isin(labels, torch.tensor(self.poison.source_classes, dtype=labels.dtype))
        if self.poison.label_mode != "all_to_all":
            mask &= labels != self.poison.target
        return mask

    def metrics(
        self, labels: torch.Tensor, clean_pred: torch.Tensor, triggered_pred: torch.Tensor
    ) -> dict[str, float]:
        wanted = attack_labels(self.poison, labels, self.num_classes)
        mask = self.attack_mask(labels)
        hit = triggered_pred == wanted

        def mean(values: torch.Tensor) -> float:
            return float(values.float().mean()) if values.numel() else float("nan")

        return {
            "clean_acc": mean(clean_pred == labels),
            "asr": mean(hit[mask]),
            "asr_all": mean(hit),
            "robust_acc": mean((triggered_pred == labels)[mask]),
        }
