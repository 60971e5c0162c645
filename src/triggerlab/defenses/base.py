"""What every defence is: a typed spec whose ``run`` acts on explicit inputs.

A defence sees the trained model, the task, the training set as the model saw
it, and, when its kind holds data back, clean samples set aside before
poisoning. It never sees the test set or which samples were poisoned: the
shared evaluation (``defenses/evaluation.py``) measures what it produced
against those, and ``defenses/leakage.py`` builds and checks what it is handed.
Only a kind marked ``oracle`` (and named ``oracle_...``) is handed those too,
as ``OracleInputs``: a bound for comparison, never a defence. What it produces
is one ``DefenseOutcome``: a repaired model, an input detector, scores for the
training samples, suspect classes, or several of these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from triggerlab.catalogue.defenses import NoDefenseSpec, RetrainingSpec

if TYPE_CHECKING:
    from triggerlab.attack.tasks import Task
    from triggerlab.config import TrainConfig
    from triggerlab.data.dataset import ImageDataset
    from triggerlab.defenses.repair import RepairResult, Retraining
    from triggerlab.train.augment import Augment


class InputDetector(Protocol):
    """Scores inputs at test time; its threshold was chosen on the defender's clean data."""

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Suspicion ``[N]`` of uint8 images (higher = more likely triggered)."""
        ...

    def flag(self, scores: torch.Tensor) -> torch.Tensor:
        """The detector's decision for each score."""
        ...


@dataclass
class DefenseInputs:
    """Everything a defence may use. ``clean`` is None unless its kind holds data back."""

    model: nn.Module
    task: Task
    device: torch.device
    train: TrainConfig  # the run's optimiser and batch size, for defences that retrain
    training: ImageDataset  # the training set the model was trained on, poisoned samples included
    clean: ImageDataset | None
    generator: torch.Generator
    seed: int
    fresh_model: Callable[[], nn.Module] | None = None  # the architecture at its initial weights

    def augment(self, operations: list[str] | None = None) -> Augment | None:
        """The run's augmentation (``train.augment``), or ``operations`` instead, drawing from
        the defence's generator; None when there is none."""
        from triggerlab.train.augment import Augment

        operations = self.train.augment if operations is None else operations
        if not operations:
            return None
        return Augment(operations, self.train.crop_padding, self.generator)


@dataclass
class OracleInputs(DefenseInputs):
    """What only an oracle baseline is handed besides: the test sets and the poisoned samples.
    Never a defence's: it marks an upper bound that no defender could reach."""

    test: ImageDataset | None = None
    triggered_test: torch.Tensor | None = None
    poisoned: torch.Tensor | None = None  # [N] bool over ``training``


@contextlib.contextmanager
def frozen_weights(model: nn.Module) -> Iterator[None]:
    """The model's parameters stop taking gradients while a defence optimises something else
    (masks, triggers); each gets its own setting back afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    for param in model.parameters():
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in zip(model.parameters(), flags, strict=True):
            param.requires_grad_(flag)


def shuffled_batches(
    images: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    layout: torch.memory_format = torch.contiguous_format,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over uint8 ``images`` in a seeded random order, as float inputs and targets."""
    from triggerlab.train.devices import to_input

    order = torch.randperm(images.shape[0], generator=generator)
    for start in range(0, images.shape[0], batch_size):
        index = order[start : start + batch_size]
        yield to_input(images[index], device, layout), targets[index].to(device)


@dataclass
class DefenseOutcome:
    """What a defence produced; the evaluation measures each part that is present."""

    report: dict[str, Any]  # its budget and choices: clean samples, epochs, pruned channels, ...
    repaired: bool = False  # the model was changed in place: measure it again
    input_detector: InputDetector | None = None
    sample_scores: tuple[torch.Tensor, torch.Tensor] | None = None  # (scores, flags) per sample
    suspect_classes: list[int] | None = None  # a model inspection's flagged classes
    class_anomaly: list[float] | None = None  # its per-class anomaly index
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG


def retraining(
    spec: RetrainingSpec, inputs: DefenseInputs, epochs: int | None = None
) -> Retraining:
    """How ``spec`` retrains, the run's settings filled in where it leaves them (for
    ``epochs`` epochs when given, else the spec's)."""
    from triggerlab.defenses.repair import Retraining

    return Retraining(
        epochs=spec.epochs if epochs is None else epochs,
        lr=spec.lr,
        optimizer=spec.optimizer,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
        batch_size=spec.batch_size or inputs.train.batch_size,
        lr_schedule=spec.lr_schedule,
        lr_steps=tuple(spec.lr_steps),
        augment=inputs.augment(spec.augment),
    )


def retrain(
    spec: RetrainingSpec,
    inputs: DefenseInputs,
    images: torch.Tensor,
    targets: torch.Tensor,
    epochs: int | None = None,
) -> RepairResult:
    """Fine-tune the model on ``images`` as ``spec`` says (for ``epochs`` when given)."""
    from triggerlab.defenses.repair import fine_tune

    return fine_tune(
        inputs.model,
        inputs.task,
        images,
        targets,
        train=inputs.train,
        recipe=retraining(spec, inputs, epochs),
        device=inputs.device,
        generator=inputs.generator,
        lr_key="defense.lr",
    )


def run_none(spec: NoDefenseSpec, inputs: DefenseInputs) -> DefenseOutcome:
    """No defence: nothing changes, and the evaluation measures the model as trained."""
    return DefenseOutcome({})
