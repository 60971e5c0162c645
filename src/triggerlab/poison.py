"""Choosing which training samples to poison, rewriting them, and transforming their labels.

Counts follow the rule ``count = round(rate * N)`` with N the size of the clean
training set, and the count is always reported beside the rate. Python's
``round`` halves to even; 0.5 % of 1,437 samples is 7 (7.185 rounded).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError
from triggerlab.triggers import Trigger, apply_to_uint8

if TYPE_CHECKING:
    from triggerlab.config import PoisonConfig
    from triggerlab.tasks import Task


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


def check_poison_count(task: Task, train: ImageDataset, where: str = "training set") -> int:
    """The number of samples to poison; ConfigError when fewer samples are eligible."""
    cfg = task.poison
    count = poison_count(cfg, len(train))
    eligible = int(task.poison_sources(train.targets).sum())
    if count > eligible:
        raise ConfigError(
            f"poison: {count} poisoned samples requested but only {eligible} are eligible "
            f"under label_mode={cfg.label_mode} (a {where} of {len(train)} samples)"
        )
    return count


def poison_dataset(
    train: ImageDataset,
    task: Task,
    trigger: Trigger,
    generator: torch.Generator,
    where: str = "training set",
) -> PoisonResult:
    """Draw ``count`` samples the task says are eligible, uniformly without replacement, and
    poison them as ``task.poison`` says (``replace`` or ``append``)."""
    count = check_poison_count(task, train, where)
    candidates = torch.nonzero(task.poison_sources(train.targets)).flatten()
    chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:count]]
    chosen, _ = torch.sort(chosen)
    original = train.targets[chosen]
    new = task.poisoned_labels(original)
    triggered = apply_to_uint8(trigger, train.images[chosen], generator)

    if task.poison.mode == "replace":
        images = train.images.clone()
        targets = train.targets.clone()
        images[chosen] = triggered
        targets[chosen] = new
        positions = chosen
        groups = train.groups
    else:
        images = torch.cat([train.images, triggered])
        targets = torch.cat([train.targets, new])
        positions = torch.arange(len(train), len(train) + count)
        groups = None if train.groups is None else torch.cat([train.groups, train.groups[chosen]])
    pool = train.pool_index
    if pool is not None and task.poison.mode != "replace":
        pool = torch.cat([pool, pool[chosen]])  # a copy of a pooled image, triggered
    poisoned = replace(train, images=images, targets=targets, groups=groups, pool_index=pool)
    return PoisonResult(poisoned, positions, chosen, original, new)
