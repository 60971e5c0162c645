"""What one run works with, fixed before anything is written: the checked config, its data,
trigger, task and model, the device and the seeds of every random stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from triggerlab.attack.stamping import Stamping
from triggerlab.attack.tasks import Task
from triggerlab.config import ExperimentConfig, PoisonConfig
from triggerlab.data.dataset import DataSplit, ImageDataset
from triggerlab.models import ModelInfo
from triggerlab.triggers import Trigger


@dataclass(frozen=True)
class RunContext:
    """The run's inputs, validated. The stages read it and return what they produce; the
    model's weights are the one thing training changes in place."""

    cfg: ExperimentConfig
    data: DataSplit  # bins as classes under reference 003's variant; the defender's share out
    trigger: Trigger
    stamping: Stamping  # where the trigger is stamped: the model's inputs or native images
    task: Task
    defender: ImageDataset | None  # clean samples held back for the defence
    model: nn.Module
    model_info: ModelInfo
    device: torch.device
    seeds: dict[str, int]  # one per random stream (triggerlab.seeds.SEED_STREAMS)
    load_s: float  # seconds spent loading the data
    # where a low-frequency pattern came from (run/lf_pattern.py), for summary.json
    trigger_pattern: dict[str, Any] | None = None

    @property
    def poison(self) -> PoisonConfig:
        """As applied: reference 003's bins turn a target vector into a class."""
        return self.task.poison
