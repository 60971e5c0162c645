"""Retraining on the defender's clean data, shared by the defences that repair a model.

A ``Retraining`` is how one retrains: epochs, optimiser, learning-rate schedule,
batch size and augmentation. By default these are the run's (its optimiser at the
defence's ``lr``, its batch size, its ``train.augment``): the authors fine-tune with
the augmentation their models were trained with (NAD's ``main.py`` through
``data_loader.py:10``, ABL's ``backdoor_unlearning.py:159``, BackdoorBench's
``get_transform(..., train=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from triggerlab.train.loop import Step, make_optimizer, train_epoch
from triggerlab.train.optimizers import Optimiser

if TYPE_CHECKING:
    from triggerlab.config import TrainConfig
    from triggerlab.train.augment import Augment
    from triggerlab.train.loop import Objective


@dataclass
class RepairResult:
    """What the defender did: its data and training budget, and what it pruned."""

    clean_samples: int
    epochs: int
    pruned_channels: list[int] = field(default_factory=list)
    channels: int = 0


@dataclass(frozen=True)
class Retraining:
    """One retraining's settings, the run's already filled in."""

    epochs: int
    lr: float
    batch_size: int
    optimizer: str = "run"  # the run's optimiser, or "sgd" with ``momentum``
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float | None = None  # None: the run's
    lr_schedule: str = "constant"  # or "cosine"
    lr_steps: tuple[tuple[int, float], ...] = ()
    augment: Augment | None = None

    def make_optimizer(self, model: nn.Module, train: TrainConfig) -> Optimiser:
        decay = train.weight_decay if self.weight_decay is None else self.weight_decay
        if self.optimizer == "run":
            return make_optimizer(
                train.model_copy(update={"lr": self.lr, "weight_decay": decay}), model
            )
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.SGD(
            params,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=decay,
            nesterov=self.nesterov and self.momentum > 0,
        )

    def lr_at(self, epoch: int) -> float:
        """The rate of epoch ``epoch`` (from 0): a step schedule's, cosine's, or ``lr``."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        rate = self.lr
        for start, value in self.lr_steps:
            if epoch >= start:
                rate = value
        return rate

    def epochs_with_rate(self, optimizer: Optimiser) -> Iterator[int]:
        """Each epoch's number, with the optimiser's rate set for it first."""
        for epoch in range(self.epochs):
            for group in optimizer.param_groups:
                group["lr"] = self.lr_at(epoch)
            yield epoch


def fine_tune(
    model: nn.Module,
    task: Objective,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    train: TrainConfig,
    recipe: Retraining,
    device: torch.device,
    generator: torch.Generator,
    lr_key: str = "defense.lr",
) -> RepairResult:
    """Train on the clean data alone as ``recipe`` says (the config key ``lr_key`` sets its
    rate: a diverging loss names it)."""
    optimizer = recipe.make_optimizer(model, train)
    images, targets = images.to(device), targets.to(device)
    step = Step(augment=recipe.augment)
    for _ in recipe.epochs_with_rate(optimizer):
        train_epoch(
            model,
            task,
            optimizer,
            images,
            targets,
            batch_size=recipe.batch_size,
            device=device,
            generator=generator,
            step=step,
            lr_key=lr_key,
        )
    return RepairResult(clean_samples=int(images.shape[0]), epochs=recipe.epochs)
