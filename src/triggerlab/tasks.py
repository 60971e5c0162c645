"""Tasks own the loss, the predictions and the metrics; the training loop is shared.

Classification (DESIGN.md's definitions):

* CA: accuracy on the clean test set.
* ASR: over triggered test samples the attack applies to (true label not the
  target for all-to-one and clean-label; restricted to ``source_classes`` when
  given), the fraction predicted as the attacker's label. For all-to-all the
  attacker's label is ``(y + 1) mod K``.
* asr_all: the same fraction over every triggered test sample, target class
  included (for all-to-all it equals ASR unless sources are restricted).
* RA: over the samples ASR counts, the fraction still predicted as the true label.

Regression (errors in degrees for gaze and head pose, label units otherwise):

* clean_error: mean error of clean predictions against the true labels. Gaze:
  angular error between the 3-D directions of (pitch, yaw); head pose and other
  targets: mean absolute error over the outputs, also reported per output.
* attack_error: mean error of triggered predictions against the attacker's
  target (reference 000's "dirty set" error).
* attack_success_<tau>: fraction of triggered predictions within tau of the target.
* mean_shift: mean over test samples of error(clean prediction, target) minus
  error(triggered prediction, target): how far the trigger moves predictions
  towards the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from triggerlab.config import ExperimentConfig, PoisonConfig
from triggerlab.data.dataset import DataSplit, ImageDataset
from triggerlab.errors import ConfigError
from triggerlab.gaze import angular_error
from triggerlab.poison import attack_labels, validate_poison, validate_regression_poison

METRIC_NAMES = ("clean_acc", "asr", "asr_all", "robust_acc")
METRIC_LABELS = {
    "clean_acc": "clean accuracy (CA)",
    "asr": "attack success rate (ASR)",
    "asr_all": "ASR incl. target class",
    "robust_acc": "robust accuracy (RA)",
    "clean_error": "clean error",
    "attack_error": "attack error (to the target)",
    "mean_shift": "mean shift towards the target",
    "bin_acc": "bin accuracy (clean)",
    "bin_asr": "triggered predictions in the target's bin",
}


def metric_label(name: str) -> str:
    if name.startswith("attack_success_"):
        return f"attack success within {name.removeprefix('attack_success_')}"
    if name.startswith("clean_mae_"):
        return f"clean MAE of {name.removeprefix('clean_mae_')}"
    return METRIC_LABELS.get(name, name)


def _mean(values: torch.Tensor) -> float:
    return float(values.float().mean()) if values.numel() else float("nan")


class ClassificationTask:
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

    def attack_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Test samples the attack is measured on (ASR and RA)."""
        mask = torch.ones_like(labels, dtype=torch.bool)
        if self.poison.source_classes is not None:
            mask = torch.isin(labels, torch.tensor(self.poison.source_classes, dtype=labels.dtype))
        if self.poison.label_mode != "all_to_all":
            mask &= labels != self.poison.target
        return mask

    def describe(self, values: torch.Tensor) -> list[str]:
        return [self.class_names[int(v)] for v in values]

    def metrics(
        self, labels: torch.Tensor, clean_pred: torch.Tensor, triggered_pred: torch.Tensor
    ) -> dict[str, float]:
        wanted = attack_labels(self.poison, labels, self.num_classes)
        mask = self.attack_mask(labels)
        hit = triggered_pred == wanted
        return {
            "clean_acc": _mean(clean_pred == labels),
            "asr": _mean(hit[mask]),
            "asr_all": _mean(hit),
            "robust_acc": _mean((triggered_pred == labels)[mask]),
        }


@dataclass(frozen=True)
class Bins:
    """Reference 003's discretisation: ``count`` equal bins over [low, high] of one output.

    Bin ``i`` holds ``low + i * w <= v < low + (i + 1) * w`` with ``w = (high - low) / count``;
    ``high`` itself and values beyond the range go to the nearest end bin.
    """

    index: int
    name: str
    low: float
    high: float
    count: int

    def assign(self, values: torch.Tensor) -> torch.Tensor:
        scaled = (values[:, self.index].double() - self.low) / (self.high - self.low) * self.count
        return scaled.floor().clamp(0, self.count - 1).long()

    def edges(self) -> list[float]:
        step = (self.high - self.low) / self.count
        return [self.low + i * step for i in range(self.count + 1)]


def confusion_counts(truth: torch.Tensor, predicted: torch.Tensor, count: int) -> torch.Tensor:
    """Counts ``[count, count]`` of class indices: rows true, columns predicted."""
    flat = truth.long() * count + predicted.long()
    return torch.bincount(flat, minlength=count**2).view(count, count)


class RegressionTask:
    """K continuous outputs; ``kind`` chooses the error: gaze angles, head pose or generic."""

    def __init__(
        self,
        target: Sequence[float],
        names: Sequence[str],
        kind: str = "generic",
        loss: str = "l1",
        tolerances: Sequence[float] = (5.0, 10.0),
        bins: Bins | None = None,
    ) -> None:
        self.target = torch.tensor(list(target), dtype=torch.float32)
        self.names = tuple(names)
        self.kind = kind
        self.loss_name = loss
        self.tolerances = tuple(tolerances)
        self.bins = bins
        self.num_outputs = len(self.names)
        per_output = tuple(f"clean_mae_{n}" for n in self.names) if kind != "gaze" else ()
        self.metric_names = (
            "clean_error",
            "attack_error",
            *(f"attack_success_{t:g}" for t in self.tolerances),
            "mean_shift",
            *(("bin_acc", "bin_asr") if bins is not None else ()),
            *per_output,
        )

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "mse":
            return F.mse_loss(outputs, targets)
        return F.l1_loss(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()

    def attack_mask(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.ones(labels.shape[0], dtype=torch.bool)

    def error(self, prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-sample error: angular (degrees) for gaze, else mean absolute error over outputs."""
        if self.kind == "gaze":
            return angular_error(prediction, reference).float()
        return (prediction - reference).abs().mean(dim=1)

    def describe(self, values: torch.Tensor) -> list[str]:
        scale = 180 / math.pi if self.kind == "gaze" else 1.0
        return [
            " ".join(
                f"{n[:1]}{float(v) * scale:+.0f}" for n, v in zip(self.names, row, strict=True)
            )
            for row in values
        ]

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
        if self.kind != "gaze":
            absolute = (clean_pred - labels).abs()
            result.update(
                {f"clean_mae_{n}": _mean(absolute[:, i]) for i, n in enumerate(self.names)}
            )
        return result


Task = ClassificationTask | RegressionTask


def make_task(cfg: ExperimentConfig, data: DataSplit) -> Task:
    """The task of a dataset (classes or continuous labels), checked against the config."""
    if not data.is_regression:
        if cfg.evaluation.bins is not None:
            raise ConfigError(
                "evaluation.bins: the discretisation metric is for regression datasets"
            )
        if cfg.train.loss not in ("auto", "cross_entropy"):
            raise ConfigError(
                f"train.loss: {cfg.train.loss!r} is a regression loss; "
                "classification trains with cross_entropy"
            )
        validate_poison(cfg.poison, len(data.class_names))
        return ClassificationTask(cfg.poison, data.class_names)
    if cfg.train.loss == "cross_entropy":
        raise ConfigError(
            "train.loss: cross_entropy on continuous labels is reference 003's classification "
            "variant; set evaluation.bins (and evaluation.bin_output) to choose the classes"
        )
    validate_regression_poison(cfg.poison, data.train.targets, data.target_names)
    return RegressionTask(
        cfg.poison.target,  # type: ignore[arg-type]
        data.target_names,
        data.label_kind,
        "mse" if cfg.train.loss == "mse" else "l1",
        cfg.evaluation.tolerances,
        make_bins(cfg, data),
    )


def make_bins(cfg: ExperimentConfig, data: DataSplit) -> Bins | None:
    """The discretisation of ``evaluation``, its range defaulting to the training labels'."""
    evaluation = cfg.evaluation
    if evaluation.bins is None:
        return None
    names = data.target_names
    name = evaluation.bin_output or names[0]
    if name not in names:
        raise ConfigError(
            f"evaluation.bin_output: {name!r} is not an output; expected one of {', '.join(names)}"
        )
    index = names.index(name)
    if evaluation.bin_range is not None:
        low, high = evaluation.bin_range
    else:
        column = data.train.targets[:, index]
        low, high = float(column.min()), float(column.max())
    return Bins(index, name, low, high, evaluation.bins)


def _binned(part: ImageDataset, bins: Bins, names: tuple[str, ...]) -> ImageDataset:
    metadata = {**part.metadata, "binned_output": bins.name, "bin_edges": bins.edges()}
    return replace(part, targets=bins.assign(part.targets), class_names=names, metadata=metadata)


CLASS_ONLY_DEFENSES = ("strip", "neural_cleanse")  # they need class probabilities


def setup_task(cfg: ExperimentConfig, data: DataSplit) -> tuple[DataSplit, PoisonConfig, Task]:
    """The data, poisoning and task a run uses.

    Continuous labels trained with ``train.loss: cross_entropy`` are reference
    003's classification variant: the ``evaluation.bins`` of one output become
    the classes and the attacker's target vector becomes its bin, so the
    classification metrics (CA, ASR, RA) measure the attack on the bins.
    """
    if not (data.is_regression and cfg.train.loss == "cross_entropy" and cfg.evaluation.bins):
        if data.is_regression and cfg.defense.kind in CLASS_ONLY_DEFENSES:
            raise ConfigError(
                f"defense.kind: {cfg.defense.kind} needs classes; for regression use finetune, "
                "fine_pruning, spectral_signatures or activation_clustering"
            )
        return data, cfg.poison, make_task(cfg, data)
    validate_regression_poison(cfg.poison, data.train.targets, data.target_names)
    bins = make_bins(cfg, data)
    assert bins is not None
    edges = bins.edges()
    names = tuple(f"{bins.name} [{edges[i]:.3g}, {edges[i + 1]:.3g})" for i in range(bins.count))
    finetune = None if data.finetune is None else _binned(data.finetune, bins, names)
    binned = DataSplit(_binned(data.train, bins, names), _binned(data.test, bins, names), finetune)
    target = int(bins.assign(torch.tensor([cfg.poison.target], dtype=torch.float32))[0])
    poison = cfg.poison.model_copy(update={"target": target})
    return binned, poison, ClassificationTask(poison, names)
