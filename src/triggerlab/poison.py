"""Choosing which training samples to poison, rewriting them, and transforming their labels.

Counts follow the rule ``count = round(rate * N)`` with N the size of the clean
training set, and the count is always reported beside the rate. Python's
``round`` halves to even; 0.5 % of 1,437 samples is 7 (7.185 rounded).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from triggerlab.config import PoisonConfig
from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError
from triggerlab.triggers import Trigger, apply_to_uint8


@dataclass(frozen=True)
class PoisonResult:
    """The training set the model sees, and a record of what was poisoned."""

    train: ImageDataset
    indices: torch.Tensor  # positions of poisoned samples in ``train``
    source_indices: torch.Tensor  # the clean samples they were made from
    original_labels: torch.Tensor
    new_labels: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.indices.numel())

    @property
    def fraction(self) -> float:
        """Poisoned / all samples the model trains on (below the rate in append mode)."""
        return self.count / len(self.train) if len(self.train) else 0.0


def poison_count(cfg: PoisonConfig, train_size: int) -> int:
    if cfg.count is not None:
        return cfg.count
    assert cfg.rate is not None
    return round(cfg.rate * train_size)


def eligible_mask(cfg: PoisonConfig, targets: torch.Tensor) -> torch.Tensor:
    """Samples a poisoned copy may be drawn from.

    all-to-one: non-target samples (of ``source_classes`` when given); clean-label:
    target-class samples only; all-to-all: all samples (of ``source_classes``);
    regression: all samples.
    """
    if targets.is_floating_point():
        return torch.ones(targets.shape[0], dtype=torch.bool)
    if cfg.label_mode == "clean_label":
        return targets == cfg.target
    mask = torch.ones_like(targets, dtype=torch.bool)
    if cfg.source_classes is not None:
        mask = torch.isin(targets, torch.tensor(cfg.source_classes, dtype=targets.dtype))
    if cfg.label_mode == "all_to_one":
        mask &= targets != cfg.target
    return mask


def attack_labels(cfg: PoisonConfig, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """What the attacker wants a triggered input of true class ``y`` classified as.

    ``(y + 1) mod K`` for all-to-all, else the target class; for regression the
    target vector.
    """
    if labels.is_floating_point():
        return torch.tensor(cfg.target, dtype=labels.dtype).expand_as(labels).clone()
    if cfg.label_mode == "all_to_all":
        return (labels + 1) % num_classes
    return torch.full_like(labels, cfg.target)


def poisoned_labels(cfg: PoisonConfig, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels written on poisoned training samples: clean-label attacks keep the true ones."""
    if cfg.label_mode == "clean_label":
        return labels.clone()
    return attack_labels(cfg, labels, num_classes)


def validate_poison(cfg: PoisonConfig, num_classes: int) -> None:
    """Check the target and source classes against the dataset's classes."""
    if not isinstance(cfg.target, int):
        raise ConfigError(
            f"poison.target: {cfg.target} is a vector, but this dataset has classes; "
            f"expected a class 0-{num_classes - 1}"
        )
    if not 0 <= cfg.target < num_classes:
        raise ConfigError(
            f"poison.target: class {cfg.target} does not exist; expected 0-{num_classes - 1}"
        )
    bad = [c for c in cfg.source_classes or [] if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"poison.source_classes: {bad} outside the classes 0-{num_classes - 1}")


def validate_regression_poison(
    cfg: PoisonConfig, train_targets: torch.Tensor, names: list[str]
) -> None:
    """The target must have one value per output; a target outside the labels' range only warns.

    Reference 003 discusses why: a target the model never saw is easier to learn
    but easier to notice.
    """
    size = train_targets.shape[1]
    if isinstance(cfg.target, int):
        raise ConfigError(
            f"poison.target: this is a regression dataset; expected a list of {size} values "
            f"({', '.join(names)}) in label units, got the class {cfg.target}"
        )
    if len(cfg.target) != size:
        raise ConfigError(
            f"poison.target: expected {size} values ({', '.join(names)}), got {len(cfg.target)}"
        )
    if cfg.label_mode != "all_to_one" or cfg.source_classes is not None:
        raise ConfigError(
            "poison.label_mode: regression supports all_to_one with every sample eligible "
            "(no source_classes, no clean-label or all-to-all)"
        )
    low, high = train_targets.min(dim=0).values, train_targets.max(dim=0).values
    outside = [
        n
        for n, v, lo, hi in zip(names, cfg.target, low.tolist(), high.tolist(), strict=True)
        if not lo <= v <= hi
    ]
    if outside:
        warnings.warn(
            f"poison.target {cfg.target} lies outside the training labels' range "
            f"for {', '.join(outside)}",
            stacklevel=2,
        )


def poison_dataset(
    train: ImageDataset, cfg: PoisonConfig, trigger: Trigger, generator: torch.Generator
) -> PoisonResult:
    """Draw ``count`` eligible samples uniformly without replacement and poison them."""
    count = poison_count(cfg, len(train))
    candidates = torch.nonzero(eligible_mask(cfg, train.targets)).flatten()
    if count > candidates.numel():
        raise ConfigError(
            f"poison: {count} poisoned samples requested but only {candidates.numel()} are "
            f"eligible under label_mode={cfg.label_mode}"
        )
    chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:count]]
    chosen, _ = torch.sort(chosen)
    original = train.targets[chosen]
    new = poisoned_labels(cfg, original, train.num_classes)
    triggered = apply_to_uint8(trigger, train.images[chosen], generator)

    if cfg.mode == "replace":
        images = train.images.clone()
        targets = train.targets.clone()
        images[chosen] = triggered
        targets[chosen] = new
        positions = chosen
    else:
        images = torch.cat([train.images, triggered])
        targets = torch.cat([train.targets, new])
        positions = torch.arange(len(train), len(train) + count)
    poisoned = ImageDataset(images, targets, train.class_names, train.metadata)
    return PoisonResult(poisoned, positions, chosen, original, new)
