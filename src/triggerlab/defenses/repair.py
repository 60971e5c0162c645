"""Retraining on the defender's clean data, shared by the defences that repair a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from triggerlab.train.loop import make_optimizer, train_epoch

if TYPE_CHECKING:
    from triggerlab.config import TrainConfig
    from triggerlab.train.loop import Objective


@dataclass
class RepairResult:
    """What the defender did: its data and training budget, and what it pruned."""

    clean_samples: int
    epochs: int
    pruned_channels: list[int] = field(default_factory=list)
    channels: int = 0


def fine_tune(
    model: nn.Module,
    task: Objective,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    train: TrainConfig,
    epochs: int,
    lr: float,
    device: torch.device,
    generator: torch.Generator,
) -> RepairResult:
    """Train on the clean data alone, with the run's optimiser at learning rate ``lr``."""
    optimizer = make_optimizer(train.model_copy(update={"lr": lr}), model)
    images, targets = images.to(device), targets.to(device)
    for _ in range(epochs):
        train_epoch(
            model,
            task,
            optimizer,
            images,
            targets,
            batch_size=train.batch_size,
            device=device,
            generator=generator,
        )
    return RepairResult(clean_samples=int(images.shape[0]), epochs=epochs)
