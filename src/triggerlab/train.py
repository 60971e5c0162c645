"""The one training loop: index slices of in-memory uint8 tensors, made float on the device."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from triggerlab.errors import ConfigError, RunFailed
from triggerlab.metrics import metric
from triggerlab.progress import Reporter, Update, report

if TYPE_CHECKING:
    from triggerlab.config import TrainConfig

# Datasets up to this size are copied to the GPU once; larger ones stream per batch.
DEVICE_RESIDENT_BYTES = 4 * 1024**3
EVAL_BATCH_SIZE = 512


class Task(Protocol):
    metric_names: tuple[str, ...]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def predict(self, outputs: torch.Tensor) -> torch.Tensor: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def stage(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Where batches are sliced from: the device itself when it fits, else (pinned) host memory."""
    if device.type == "cpu":
        return tensor
    if tensor.numel() * tensor.element_size() <= DEVICE_RESIDENT_BYTES:
        return tensor.to(device)
    return tensor.pin_memory()


def to_input(
    batch: torch.Tensor,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """uint8 images to float in [0, 1] on ``device``: the only conversion in the hot path.

    Float inputs (cached features) are only made float32.
    """
    x = batch.to(device, non_blocking=True)
    if x.dtype != torch.uint8:
        return x.float() if x.ndim != 4 else x.to(dtype=torch.float32, memory_format=memory_format)
    return x.to(dtype=torch.float32, memory_format=memory_format).div_(255.0)


def model_memory_format(model: nn.Module) -> torch.memory_format:
    """The layout the model's convolution weights use, so inputs can match it."""
    for param in model.parameters():
        if param.ndim == 4:
            if param.is_contiguous(memory_format=torch.contiguous_format):
                return torch.contiguous_format
            return torch.channels_last
    return torch.contiguous_format


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimiser over the parameters that train (frozen ones are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model.freeze: the policy leaves no parameter to train")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def batch_starts(n: int, batch_size: int) -> range:
    """Batch offsets; a final batch of one sample is skipped (batch norm cannot train on it)."""
    stop = n - 1 if n > 1 and n % batch_size == 1 else n
    return range(0, stop, batch_size)


def train_epoch(
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    on_batch: Callable[[], None] | None = None,
) -> tuple[float, int]:
    """One pass in a seeded random order; returns (mean loss, images seen).

    RunFailed when a batch's loss is not finite: the weights are garbage from then on.
    """
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
        loss = task.loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        detached = loss.detach()
        total += detached * index.numel()  # stays on the device: no sync per batch
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), number, first_bad)
        seen += index.numel()
        if on_batch is not None:
            on_batch()
    mean = float(total) / max(seen, 1)
    if not math.isfinite(mean):
        raise RunFailed(
            f"the training loss is not finite ({mean}) from batch {int(first_bad) + 1} of "
            f"{len(starts)}; a learning rate that is too high (train.lr) or non-finite inputs "
            "cause this"
        )
    return mean, seen


@torch.no_grad()
def predict(
    model: nn.Module, task: Task, images: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Predictions for uint8 images, batch by batch, returned on the CPU."""
    model.eval()
    layout = model_memory_format(model)
    outputs = []
    finite = torch.ones((), dtype=torch.bool, device=device)
    for start in range(0, images.shape[0], EVAL_BATCH_SIZE):
        raw = model(to_input(images[start : start + EVAL_BATCH_SIZE], device, layout))
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_note(record: dict[str, Any], metric_names: Sequence[str], total_epochs: int) -> str:
    """``epoch 3/40  loss 0.4123  CA 0.9512 ...  14000 img/s``: one epoch as a log line."""
    values = "  ".join(f"{metric(m).short} {record[m]:.4f}" for m in metric_names if m in record)
    return (
        f"epoch {record['epoch']}/{total_epochs}  loss {record['train_loss']:.4f}  {values}  "
        f"{record['train_images_per_s']:.0f} img/s"
    )


@dataclass
class Schedule:
    """Where an epoch sits in the whole run (a second stage continues the first's count)."""

    first_epoch: int = 1
    total_epochs: int | None = None  # of the whole run; None: this stage's epochs


def make_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
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


def fit(
    model: nn.Module,
    task: Task,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    evaluate: Callable[[nn.Module], dict[str, float]],
    on_epoch: Callable[[dict[str, Any]], None],
    progress: Reporter | None = None,
    schedule: Schedule | None = None,
) -> list[dict[str, Any]]:
    """Train for ``cfg.epochs``, evaluating and reporting after every epoch."""
    schedule = schedule or Schedule()
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    images, targets = stage(images, device), stage(targets, device)
    counter = BatchCounter(
        progress, len(batch_starts(images.shape[0], cfg.batch_size)) * cfg.epochs
    )
    history: list[dict[str, Any]] = []
    for number in range(cfg.epochs):
        synchronize(device)
        start = time.perf_counter()
        epoch = schedule.first_epoch + number
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
            )
        except RunFailed as exc:
            raise RunFailed(f"epoch {epoch}: {exc}") from None
        synchronize(device)
        train_time = time.perf_counter() - start
        if scheduler is not None:
            scheduler.step()
        record = {
            "epoch": epoch,
            "train_loss": loss,
            **evaluate(model),
            "epoch_time_s": time.perf_counter() - start,
            "train_time_s": train_time,
            "train_images_per_s": seen / train_time if train_time > 0 else float("nan"),
        }
        history.append(record)
        on_epoch(record)
        counter.epoch_done(
            epoch_note(record, task.metric_names[:4], schedule.total_epochs or cfg.epochs)
        )
    return history
