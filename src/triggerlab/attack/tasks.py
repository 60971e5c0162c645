"""Tasks own the loss, the predictions, who the attack applies to, and the metrics.

Classification (DESIGN.md's definitions):

* CA: accuracy on the clean test set.
* ASR: over triggered test samples the attack applies to (true label not the
  target for all-to-one and clean-label; restricted to ``source_classes`` when
  given), the fraction predicted as the attacker's label. For all-to-all the
  attacker's label is ``(y + 1) mod K``.
* asr_all: the same fraction over every triggered test sample, target class
  included (for all-to-all it equals ASR unless sources are restricted).
* RA: over the samples ASR counts, the fraction still predicted as the true label.

Regression (errors in the label kind's unit: degrees for gaze and head pose):

* clean_error: mean error of clean predictions against the true labels. Gaze:
  angular error between the 3-D directions of (pitch, yaw); head pose and other
  targets: mean absolute error over the outputs, also reported per output.
* attack_error: mean error of triggered predictions against the attacker's
  target (reference 000's "dirty set" error).
* attack_success_<tau>: fraction of triggered predictions within tau of the target.
* mean_shift: mean over test samples of error(clean prediction, target) minus
  error(triggered prediction, target): how far the trigger moves predictions
  towards the target.

The rule of who an attack applies to lives here once: ``attack_mask`` (the
test samples ASR and RA count) and ``poison_sources`` (the training samples
a poisoned copy may be drawn from) are asked of the task by the poisoning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from triggerlab.config import PoisonConfig
from triggerlab.data.bins import Bins
from triggerlab.data.labels import Labels

METRIC_NAMES = ("clean_acc", "asr", "asr_all", "robust_acc")


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean()) if values.numel() else float("nan")


def confusion_counts(truth: torch.Tensor, predicted: torch.Tensor, count: int) -> torch.Tensor:
    """Counts ``[count, count]`` of class indices: rows true, columns predicted."""
    flat = truth.long() * count + predicted.long()
    return torch.bincount(flat, minlength=count**2).view(count, count)


class ClassificationTask:
    is_regression = False

    def __init__(self, poison: PoisonConfig, class_names: Sequence[str]) -> None:
        self.poison = poison
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.num_outputs = self.num_classes
        self.metric_names = METRIC_NAMES

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=1)

    def in_sources(self, labels: torch.Tensor) -> torch.Tensor:
        if self.poison.source_classes is None:
            return torch.ones_like(labels, dtype=torch.bool)
        return torch.isin(labels, torch.tensor(self.poison.source_classes, dtype=labels.dtype))

    def attack_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Samples the attack is meant for: of the source classes, and not already the target
        (all-to-all has no single target)."""
        mask = self.in_sources(labels)
        if self.poison.label_mode != "all_to_all":
            mask &= labels != self.poison.target
        return mask

    def poison_sources(self, labels: torch.Tensor) -> torch.Tensor:
        """Training samples a poisoned copy may be drawn from: those the attack is meant for,
        except that a clean-label attack can only use images that already are the target, and
        that ``poison.sources: all`` draws from the target class too (as BackdoorBench does)."""
        if self.poison.label_mode == "clean_label":
            return labels == self.poison.target
        if self.poison.sources == "all":
            return self.in_sources(labels)
        return self.attack_mask(labels)

    def attack_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """What the attacker wants a triggered input of true class ``y`` classified as."""
        if self.poison.label_mode == "all_to_all":
            return (labels + 1) % self.num_classes
        return torch.full_like(labels, int(self.poison.target))  # type: ignore[arg-type]

    def poisoned_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels written on poisoned training samples: clean-label attacks keep the true ones."""
        if self.poison.label_mode == "clean_label":
            return labels.clone()
        return self.attack_labels(labels)

    def describe(self, values: torch.Tensor) -> list[str]:
        return [self.class_names[int(v)] for v in values]

    def metrics(
        self, labels: torch.Tensor, clean_pred: torch.Tensor, triggered_pred: torch.Tensor
    ) -> dict[str, float]:
        mask = self.attack_mask(labels)
        hit = triggered_pred == self.attack_labels(labels)
        return {
            "clean_acc": _mean(clean_pred == labels),
            "asr": _mean(hit[mask]),
            "asr_all": _mean(hit),
            "robust_acc": _mean((triggered_pred == labels)[mask]),
        }


class RegressionTask:
    """K continuous outputs; the labels' kind chooses the error (gaze angles, head pose, ...)."""

    is_regression = True

    def __init__(
        self,
        poison: PoisonConfig,
        labels: Labels,
        loss: str = "l1",
        tolerances: Sequence[float] = (5.0, 10.0),
        bins: Bins | None = None,
    ) -> None:
        self.poison = poison
        self.target = torch.tensor(list(poison.target), dtype=torch.float32)  # type: ignore[arg-type]
        self.labels = labels
        self.names = labels.names
        self.loss_name = loss
        self.tolerances = tuple(tolerances)
        self.bins = bins
        self.num_outputs = len(self.names)
        per_output = labels.kind.per_output_errors
        self.metric_names = (
            "clean_error",
            "attack_error",
            *(f"attack_success_{t:g}" for t in self.tolerances),
            "mean_shift",
            *(("bin_acc", "bin_asr") if bins is not None else ()),
            *((f"clean_mae_{n}" for n in self.names) if per_output else ()),
        )

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "mse":
            return F.mse_loss(outputs, targets)
        return F.l1_loss(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()

    def attack_mask(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.ones(labels.shape[0], dtype=torch.bool)

    def poison_sources(self, labels: torch.Tensor) -> torch.Tensor:
        return self.attack_mask(labels)

    def attack_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self.target.to(labels.dtype).expand_as(labels).clone()

    poisoned_labels = attack_labels

    def error(self, prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-sample error in the label kind's unit."""
        return self.labels.kind.error(prediction, reference)

    def describe(self, values: torch.Tensor) -> list[str]:
        return self.labels.describe(values)

    def metrics(
        self, labels: torch.Tensor, clean_pred: torch.Tensor, triggered_pred: torch.Tensor
    ) -> dict[str, float]:
        target = self.target.expand_as(labels)
        clean_to_target = self.error(clean_pred, target)
        attack = self.error(triggered_pred, target)
        result = {
            "clean_error": _mean(self.error(clean_pred, labels)),
            "attack_error": _mean(attack),
            **{f"attack_success_{t:g}": _mean(attack <= t) for t in self.tolerances},
            "mean_shift": _mean(clean_to_target - attack),
        }
        if self.bins is not None:
            target_bin = self.bins.assign(target)
            result["bin_acc"] = _mean(self.bins.assign(clean_pred) == self.bins.assign(labels))
            result["bin_asr"] = _mean(self.bins.assign(triggered_pred) == target_bin)
        if self.labels.kind.per_output_errors:
            absolute = (clean_pred - labels).abs()
            result.update(
                {f"clean_mae_{n}": _mean(absolute[:, i]) for i, n in enumerate(self.names)}
            )
        return result


Task = ClassificationTask | RegressionTask
