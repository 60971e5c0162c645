"""The one training loop: index slices of in-memory uint8 tensors, made float on the device."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from triggerlab.config import TrainConfig
from triggerlab.errors import ConfigError

# Datasets up to this size are copied to the GPU once; larger ones stream per batch.
DEVICE_RESIDENT_BYTES = 4 * 1024**3
EVAL_BATCH_SIZE = 512


class Task(Protocol):
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
    """uint8 images to float in [0, 1] on ``device``: the only conversion in the hot path."""
    x = batch.to(device, non_blocking=True)
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
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


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
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    on_batch: Callable[[], None] | None = None,
) -> tuple[float, int]:
    """One pass in a seeded random order; returns (mean loss, images seen)."""
    model.train()
    layout = model_memory_format(model)
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    total = torch.zeros((), device=device)
    seen = 0
    for start in batch_starts(images.shape[0], batch_size):
        index = order[start : start + batch_size]
        x = to_input(images[index], device, layout)
        y = targets[index].to(device, non_blocking=True)
        loss = task.loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * index.numel()  # stays on the device: no sync per batch
        seen += index.numel()
        if on_batch is not None:
            on_batch()
    return float(total) / max(seen, 1), seen


@torch.no_grad()
def predict(
    model: nn.Module, task: Task, images: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Predictions for uint8 images, batch by batch, returned on the CPU."""
    model.eval()
    layout = model_memory_format(model)
    outputs = [
        task.predict(model(to_input(images[start : start + EVAL_BATCH_SIZE], device, layout))).cpu()
        for start in range(0, images.shape[0], EVAL_BATCH_SIZE)
    ]
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


def fit(
    model: nn.Module,
    task: Task,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    evaluate: Callable[[nn.Module], dict[str, float]],
    on_epoch: Callable[[dict[str, Any]], None],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train for ``cfg.epochs``, evaluating and reporting after every epoch."""
    optimizer = make_optimizer(cfg, model)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        if cfg.lr_schedule == "cosine"
        else None
    )
    images, targets = stage(images, device), stage(targets, device)
    batches = len(batch_starts(images.shape[0], cfg.batch_size))
    history: list[dict[str, Any]] = []
    bar = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not progress,
        transient=False,
    )
    with bar:
        bar_task = bar.add_task(
            "train", total=batches * cfg.epochs, epoch=1, epochs=cfg.epochs, status=""
        )
        for epoch in range(1, cfg.epochs + 1):
            bar.update(bar_task, epoch=epoch)
            synchronize(device)
            start = time.perf_counter()
            loss, seen = train_epoch(
                model,
                task,
                optimizer,
                images,
                targets,
                cfg.batch_size,
                device,
                generator,
                on_batch=lambda: bar.advance(bar_task),
            )
            synchronize(device)
            train_time = time.perf_counter() - start
            if scheduler is not None:
                scheduler.step()
            metrics = evaluate(model)
            record = {
                "epoch": epoch,
                "train_loss": loss,
                **metrics,
                "epoch_time_s": time.perf_counter() - start,
                "train_time_s": train_time,
                "train_images_per_s": seen / train_time if train_time > 0 else float("nan"),
            }
            history.append(record)
            on_epoch(record)
            short = {"clean_acc": "CA", "asr": "ASR", "robust_acc": "RA"}
            shown = " ".join(f"{short[k]} {metrics[k]:.3f}" for k in short if k in metrics)
            bar.update(bar_task, status=f"loss {loss:.3f} {shown}")
    return history
