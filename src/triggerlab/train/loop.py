"""The one training loop: index slices of in-memory uint8 tensors, made float on the device.

Options a GPU user expects ride along: mixed precision (``train.precision``), batched
on-device augmentation (``train.augment``), ``torch.compile`` (``train.compile``), and
checkpoints every ``train.checkpoint_every`` epochs from which a killed run continues.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from triggerlab.catalogue.metrics import metric
from triggerlab.errors import ConfigError, RunFailed
from triggerlab.progress import Reporter, Update, report
from triggerlab.train.augment import Augment
from triggerlab.train.checkpoint import Checkpoint, TrainState, save_checkpoint
from triggerlab.train.devices import (
    Precision,
    compiled,
    model_memory_format,
    resident,
    synchronize,
    to_input,
)
from triggerlab.train.optimizers import SGD, Adam, CosineSchedule, Optimiser, WrittenOptimizer

if TYPE_CHECKING:
    from pathlib import Path

    from triggerlab.config import TrainConfig

EVAL_BATCH_SIZE = 512
FP32 = Precision("fp32", torch.device("cpu"))


class Objective(Protocol):
    """What the loop needs of a task: its loss, its predictions and its metric names."""

    metric_names: tuple[str, ...]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def predict(self, outputs: torch.Tensor) -> torch.Tensor: ...


class BatchTransform(Protocol):
    """Changes each training batch before it is learnt (per-batch poisoning): takes the float
    images, their targets and their positions in the training tensors; draws from
    ``generator``, which checkpoints save and restore."""

    generator: torch.Generator

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> WrittenOptimizer:
    """The configured optimiser over the parameters that train (frozen ones are left out):
    torch.optim's SGD or Adam, written out (``optimizers.py``: the same numbers, without the
    second ``torch.optim`` costs every process on its first use)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model.freeze: the policy leaves no parameter to train")
    if cfg.optimizer == "sgd":
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def batch_starts(n: int, batch_size: int) -> range:
    """Batch offsets; a final batch of one sample is skipped (batch norm cannot train on it)."""
    stop = n - 1 if n > 1 and n % batch_size == 1 else n
    return range(0, stop, batch_size)


@dataclass
class Step:
    """How one batch is learnt: precision, gradient scaling, augmentation, compiled forward."""

    precision: Precision = FP32
    scaler: torch.amp.GradScaler | None = None
    augment: Augment | None = None
    forward: nn.Module | None = None  # a compiled wrapper of the model, when compiling
    transform: BatchTransform | None = None  # before augmentation, as the authors' loops do

    def learn(
        self,
        model: nn.Module,
        task: Objective,
        optimizer: Optimiser,
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> torch.Tensor:
        if self.augment is not None:
            x = self.augment(x)
        with self.precision.autocast():
            outputs = (self.forward or model)(x)
        loss = task.loss(outputs.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()


def train_epoch(
    model: nn.Module,
    task: Objective,
    optimizer: Optimiser,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    on_batch: Callable[[], None] | None = None,
    step: Step | None = None,
    lr_key: str = "train.lr",
) -> tuple[float, int]:
    """One pass in a seeded random order; returns (mean loss, images seen).

    RunFailed when a batch's loss is not finite: the weights are garbage from then on
    (the message names ``lr_key``, the key that set this training's rate).
    """
    step = step or Step()
    model.train()
    layout = model_memory_format(model)
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    total = torch.zeros((), device=device)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    seen = 0
    starts = batch_starts(images.shape[0], batch_size)
    for number, start in enumerate(starts):
        index = order[start : start + batch_size]
        x = to_input(images[index], device, layout)
        y = targets[index].to(device, non_blocking=True)
        if step.transform is not None:
            x, y = step.transform(x, y, index)
        loss = step.learn(model, task, optimizer, x, y)
        total += loss * index.numel()  # stays on the device: no sync per batch
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), number, first_bad)
        seen += index.numel()
        if on_batch is not None:
            on_batch()
    mean = float(total) / max(seen, 1)
    if not math.isfinite(mean):
        raise RunFailed(
            f"the training loss is not finite ({mean}) from batch {int(first_bad) + 1} of "
            f"{len(starts)}; a learning rate that is too high ({lr_key}) or non-finite inputs "
            "cause this"
        )
    return mean, seen


@torch.no_grad()
def predict(
    model: nn.Module,
    task: Objective,
    images: torch.Tensor,
    device: torch.device,
    precision: Precision = FP32,
) -> torch.Tensor:
    """Predictions for uint8 images (or features), batch by batch, returned on the CPU."""
    model.eval()
    layout = model_memory_format(model)
    outputs = []
    finite = torch.ones((), dtype=torch.bool, device=device)
    for start in range(0, images.shape[0], EVAL_BATCH_SIZE):
        with precision.autocast():
            raw = model(to_input(images[start : start + EVAL_BATCH_SIZE], device, layout)).float()
        finite &= torch.isfinite(raw).all()
        outputs.append(task.predict(raw).cpu())
    if not bool(finite):
        raise RunFailed("the model's outputs are not finite (NaN or infinite) on test images")
    return torch.cat(outputs) if outputs else torch.empty(0, dtype=torch.int64)


@torch.no_grad()
def forward_all(model: nn.Module, images: torch.Tensor, device: torch.device) -> None:
    """Run every uint8 image through the model in evaluation batches, for forward hooks to see."""
    model.eval()
    layout = model_memory_format(model)
    for start in range(0, images.shape[0], EVAL_BATCH_SIZE):
        model(to_input(images[start : start + EVAL_BATCH_SIZE], device, layout))


def epoch_note(record: dict[str, Any], metric_names: Sequence[str], total_epochs: int) -> str:
    """``epoch 3/40  loss 0.4123  CA 0.9512 ...  14000 img/s``: one epoch as a log line."""
    values = "  ".join(f"{metric(m).short} {record[m]:.4f}" for m in metric_names if m in record)
    return (
        f"epoch {record['epoch']}/{total_epochs}  loss {record['train_loss']:.4f}  {values}  "
        f"{record['train_images_per_s']:.0f} img/s"
    )


@dataclass
class StagePlan:
    """Where a stage sits in the whole run, and where its checkpoints go.

    A second stage continues the first's epoch count; ``resume`` is the checkpoint
    this stage continues from (None: from its start).
    """

    first_epoch: int = 1
    total_epochs: int | None = None  # of the whole run; None: this stage's epochs
    name: str = "train"
    folder: Path | None = None  # where checkpoints go; None: none
    resume: Checkpoint | None = None
    earlier: list[dict[str, Any]] | None = None  # records of earlier stages, kept in checkpoints


def make_scheduler(cfg: TrainConfig, optimizer: Optimiser) -> CosineSchedule | None:
    """The configured schedule (torch's CosineAnnealingLR, written out), None for constant."""
    if cfg.lr_schedule == "cosine":
        return CosineSchedule(optimizer, t_max=cfg.epochs)
    return None


@dataclass
class BatchCounter:
    """Counts batches across epochs and reports them, with the last epoch's note."""

    progress: Reporter | None
    total: int
    done: int = 0
    note: str = ""

    def advance(self) -> None:
        self.done += 1
        report(self.progress, Update("training", self.done, self.total, self.note))

    def epoch_done(self, note: str) -> None:
        self.note = note
        report(self.progress, Update("training", self.done, self.total, note, milestone=True))


def epoch_record(
    epoch: int, loss: float, seen: int, start: float, train_time: float, metrics: dict[str, float]
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": loss,
        **metrics,
        "epoch_time_s": time.perf_counter() - start,
        "train_time_s": train_time,
        "train_images_per_s": seen / train_time if train_time > 0 else float("nan"),
    }


def fit(
    model: nn.Module,
    task: Objective,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    evaluate: Callable[[nn.Module], dict[str, float]],
    on_epoch: Callable[[dict[str, Any]], None],
    progress: Reporter | None = None,
    stage: StagePlan | None = None,
    augment: Augment | None = None,
    transform: BatchTransform | None = None,
) -> list[dict[str, Any]]:
    """Train for ``cfg.epochs``, evaluating and reporting after every epoch (and saving a
    checkpoint every ``cfg.checkpoint_every``); a resumed stage continues its epochs.
    ``transform`` changes every batch before it is learnt (per-batch poisoning)."""
    stage = stage or StagePlan()
    optimizer = make_optimizer(cfg, model)
    precision = Precision(cfg.precision, device)
    step = Step(precision, precision.scaler(), augment, compiled(model, cfg.compile), transform)
    generators = {"order": generator, **({"augment": augment.generator} if augment else {})}
    if transform is not None:
        generators["per_batch"] = transform.generator
    state = TrainState(model, optimizer, make_scheduler(cfg, optimizer), step.scaler, generators)
    history = resumed_history(stage, state)
    images, targets = resident(images, device), resident(targets, device)
    batches = len(batch_starts(images.shape[0], cfg.batch_size))
    counter = BatchCounter(progress, batches * cfg.epochs, batches * len(history))
    for number in range(len(history), cfg.epochs):
        synchronize(device)
        start = time.perf_counter()
        epoch = stage.first_epoch + number
        try:
            loss, seen = train_epoch(
                model,
                task,
                optimizer,
                images,
                targets,
                batch_size=cfg.batch_size,
                device=device,
                generator=generator,
                on_batch=counter.advance if progress is not None else None,
                step=step,
            )
        except RunFailed as exc:
            raise RunFailed(f"epoch {epoch}: {exc}") from None
        synchronize(device)
        train_time = time.perf_counter() - start
        if state.scheduler is not None:
            state.scheduler.step()
        record = epoch_record(epoch, loss, seen, start, train_time, evaluate(model))
        history.append({**record, "stage": stage.name})
        on_epoch(record)
        counter.epoch_done(
            epoch_note(record, task.metric_names[:4], stage.total_epochs or cfg.epochs)
        )
        maybe_checkpoint(cfg, stage, number + 1, state, history)
    return [{k: v for k, v in r.items() if k != "stage"} for r in history]


def resumed_history(stage: StagePlan, state: TrainState) -> list[dict[str, Any]]:
    """The stage's records before the checkpoint it continues from (state restored)."""
    if stage.resume is None:
        return []
    state.restore(stage.resume)
    return [r for r in stage.resume.history if r.get("stage", "train") == stage.name]


def maybe_checkpoint(
    cfg: TrainConfig, stage: StagePlan, done: int, state: TrainState, history: list[dict]
) -> None:
    """Every ``checkpoint_every`` epochs, except after the stage's last (nothing is left)."""
    every = cfg.checkpoint_every
    if stage.folder is not None and every and done % every == 0 and done < cfg.epochs:
        saved = [*(stage.earlier or []), *history]
        save_checkpoint(stage.folder, stage.name, done, state, saved)
