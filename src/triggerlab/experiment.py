"""One run: validate and load everything, then poison, train, evaluate and write the run directory.

Nothing touches the disk until every input has been checked, so a rejected
config leaves no trace. ``summary.json`` is written last: a run directory
without it is unfinished or crashed.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from triggerlab.config import ExperimentConfig, PoisonConfig
from triggerlab.data import DataSplit, ImageDataset, prepare_data
from triggerlab.data.transforms import stratified_split
from triggerlab.defenses.apply import HOLDS_BACK_DATA, apply_defense
from triggerlab.errors import ConfigError
from triggerlab.models import build_model
from triggerlab.plots import save_confusions, save_samples
from triggerlab.poison import PoisonResult, poison_dataset
from triggerlab.runio import (
    git_commit,
    library_versions,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from triggerlab.stealth import STEALTH_SAMPLE, stealth_of_uint8
from triggerlab.tasks import Task, confusion_counts, metric_label, setup_task
from triggerlab.train import fit, predict, resolve_device
from triggerlab.triggers import Trigger, apply_to_uint8

# Appending a stream keeps the others' seeds: SeedSequence children depend on their index only.
SEED_STREAMS = ("poison", "test_trigger", "init", "order", "defense", "finetune")
TIMING_COLUMNS = ("epoch_time_s", "train_time_s", "train_images_per_s")
SAMPLE_COUNT = 8


def metrics_columns(metric_names: tuple[str, ...]) -> tuple[str, ...]:
    """Columns of metrics.csv for a task's metrics."""
    return ("epoch", "train_loss", *metric_names, *TIMING_COLUMNS)


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for each random stream, all fixed by the one run seed."""
    children = np.random.SeedSequence(seed).spawn(len(SEED_STREAMS))
    return {
        name: int(child.generate_state(1)[0])
        for name, child in zip(SEED_STREAMS, children, strict=True)
    }


@dataclass
class Prepared:
    """Everything a run needs, validated, before anything is written."""

    cfg: ExperimentConfig
    data: DataSplit
    trigger: Trigger
    task: Task
    model: nn.Module
    device: torch.device
    seeds: dict[str, int]
    load_time_s: float
    poison: PoisonConfig  # as applied: reference 003's bins turn a target vector into a class
    defender: ImageDataset | None = None  # clean data held back from training for the defence


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Load data, build trigger, task and model; ConfigError/DataFormatError on bad input."""
    device = resolve_device(cfg.train.device)
    start = time.perf_counter()
    data = prepare_data(cfg.data, cfg.split_seed)
    load_time = time.perf_counter() - start
    trigger = cfg.trigger.build(data.shape)
    data, poison, task = setup_task(cfg, data)
    seeds = derive_seeds(cfg.train.seed)
    defender = None
    if cfg.defense.kind in HOLDS_BACK_DATA:
        generator = torch.Generator().manual_seed(seeds["defense"])
        train, defender = stratified_split(data.train, cfg.defense.clean_fraction, generator)
        data = replace(data, train=train)
    torch.manual_seed(seeds["init"])  # weight init, and dropout draws during training
    channels, height, width = data.shape
    model = build_model(
        cfg.model.name, channels, (height, width), data.num_outputs, cfg.model.options
    )
    layout = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=layout)
    return Prepared(cfg, data, trigger, task, model, device, seeds, load_time, poison, defender)


def allocate_run_dir(cfg: ExperimentConfig, run_dir: Path | None) -> Path:
    """Create the run directory: explicit, named by ``output.name``, or generated and unique."""
    if run_dir is None and cfg.output.name is not None:
        run_dir = cfg.output.directory / cfg.output.name
    if run_dir is not None:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"output: run directory {run_dir} already exists and is not empty")
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = f"{cfg.data.name}-{cfg.model.name}-{cfg.trigger.kind}-{stamp}"
    cfg.output.directory.mkdir(parents=True, exist_ok=True)
    for suffix in range(1000):
        candidate = cfg.output.directory / (base if suffix == 0 else f"{base}-{suffix}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"output.directory: cannot find a free run name under {cfg.output.directory}")


def target_label(task: Task, target: int | list[float]) -> str:
    """The target as a person reads it: a class name, or the vector in its units."""
    if isinstance(target, int):
        return task.describe(torch.tensor([target]))[0]
    return str(target)


def write_confusions(
    run_dir: Path,
    name: str,
    edges: list[float],
    labels: torch.Tensor,
    clean: torch.Tensor,
    triggered: torch.Tensor,
) -> None:
    """Confusion matrices of bin indices for clean and triggered test images: CSV and one PNG."""
    count = len(edges) - 1
    matrices = {
        "clean": confusion_counts(labels, clean, count),
        "triggered": confusion_counts(labels, triggered, count),
    }
    names = [f"[{edges[i]:.3g}, {edges[i + 1]:.3g})" for i in range(count)]
    for which, matrix in matrices.items():
        rows = [[names[i], *matrix[i].tolist()] for i in range(count)]
        write_csv_atomic(
            run_dir / f"confusion_{which}.csv", (f"true \\ predicted {name}", *names), rows
        )
    save_confusions(run_dir / "confusion.png", matrices, name)


def _label_text(values: torch.Tensor) -> list[Any]:
    """Class indices as they are; regression label vectors as ``a;b;c``."""
    if values.ndim == 1:
        return values.tolist()
    return [";".join(f"{v:.6g}" for v in row) for row in values.tolist()]


def write_poisoned_indices(path: Path, result: PoisonResult) -> None:
    rows = zip(
        result.indices.tolist(),
        result.source_indices.tolist(),
        _label_text(result.original_labels),
        _label_text(result.new_labels),
        strict=True,
    )
    write_csv_atomic(path, ("index", "source_index", "original_label", "new_label"), list(rows))


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The per-epoch rows of a run's ``metrics.csv`` as floats."""
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _model_bytes(model: nn.Module) -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return safetensors_bytes(state)


def finetune_stage(
    p: Prepared,
    finetune: ImageDataset,
    evaluate: Callable[[nn.Module], dict[str, float]],
    on_epoch: Callable[[dict[str, Any]], None],
    history: list[dict[str, Any]],
    progress: bool,
    run_dir: Path,
) -> dict[str, Any]:
    """Reference 000's second stage: fine-tune the pre-tuned model on a few images of the
    held-out subject, poisoned at the same rate; its epochs continue ``history``."""
    cfg = p.cfg.train
    seeds = np.random.SeedSequence(p.seeds["finetune"]).generate_state(2)
    poisoned = poison_dataset(
        finetune, p.poison, p.trigger, torch.Generator().manual_seed(int(seeds[0]))
    )
    write_poisoned_indices(run_dir / "poisoned_indices_finetune.csv", poisoned)
    after_pretune = {k: history[-1][k] for k in p.task.metric_names}
    offset = len(history)

    def continued(record: dict[str, Any]) -> None:
        record["epoch"] += offset
        on_epoch(record)

    stage_cfg = cfg.model_copy(
        update={"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr or cfg.lr}
    )
    history += fit(
        p.model,
        p.task,
        poisoned.train.images,
        poisoned.train.targets,
        stage_cfg,
        p.device,
        torch.Generator().manual_seed(int(seeds[1])),
        evaluate,
        continued,
        progress,
    )
    held_out = p.data.test.groups
    return {
        "split": "pretune_finetune",
        "held_out_subject": None if held_out is None else int(held_out[0]),
        "pretune_size": len(p.data.train),
        "finetune_size": len(poisoned.train),
        "finetune_poisoned": poisoned.count,
        "pretune_epochs": cfg.epochs,
        "finetune_epochs": cfg.finetune_epochs,
        "finetune_lr": stage_cfg.lr,
        "after_pretune": after_pretune,
    }


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> RunResult:
    """Run one experiment end to end and return its summary (also in ``summary.json``)."""
    started = time.perf_counter()
    p = prepare(cfg)
    run_dir = allocate_run_dir(cfg, run_dir)
    write_text_atomic(run_dir / "config.yaml", cfg.to_yaml())

    poison_start = time.perf_counter()
    poisoned = poison_dataset(
        p.data.train, p.poison, p.trigger, torch.Generator().manual_seed(p.seeds["poison"])
    )
    write_poisoned_indices(run_dir / "poisoned_indices.csv", poisoned)
    test = p.data.test
    triggered_test = apply_to_uint8(
        p.trigger, test.images, torch.Generator().manual_seed(p.seeds["test_trigger"])
    )
    poison_time = time.perf_counter() - poison_start
    stealth = stealth_of_uint8(test.images, triggered_test)

    eval_time = 0.0
    latest: dict[str, torch.Tensor] = {}  # the last evaluation's predictions, reused for figures

    def evaluate(model: nn.Module) -> dict[str, float]:
        nonlocal eval_time
        start = time.perf_counter()
        latest["clean"] = predict(model, p.task, test.images, p.device)
        latest["triggered"] = predict(model, p.task, triggered_test, p.device)
        eval_time += time.perf_counter() - start
        return p.task.metrics(test.targets, latest["clean"], latest["triggered"])

    rows: list[list[Any]] = []
    columns = metrics_columns(p.task.metric_names)
    finetune = p.data.finetune
    total_epochs = cfg.train.epochs + (cfg.train.finetune_epochs if finetune is not None else 0)
    shown_metrics = p.task.metric_names[:4]

    def on_epoch(record: dict[str, Any]) -> None:
        rows.append([record[c] for c in columns])
        write_csv_atomic(run_dir / "metrics.csv", columns, rows)
        if echo is not None:
            values = "  ".join(f"{m} {record[m]:.4f}" for m in shown_metrics)
            echo(
                f"epoch {record['epoch']}/{total_epochs}  loss {record['train_loss']:.4f}  "
                f"{values}  {record['train_images_per_s']:.0f} img/s"
            )

    train_start = time.perf_counter()
    history = fit(
        p.model,
        p.task,
        poisoned.train.images,
        poisoned.train.targets,
        cfg.train,
        p.device,
        torch.Generator().manual_seed(p.seeds["order"]),
        evaluate,
        on_epoch,
        progress,
    )
    protocol = None
    if finetune is not None:
        protocol = finetune_stage(p, finetune, evaluate, on_epoch, history, progress, run_dir)
    train_time = time.perf_counter() - train_start

    shown = torch.nonzero(p.task.attack_mask(test.targets)).flatten()[:SAMPLE_COUNT]
    clean_pred, triggered_pred = latest["clean"], latest["triggered"]
    target_name = target_label(p.task, p.poison.target)
    save_samples(
        run_dir / "samples.png",
        test.images[shown],
        triggered_test[shown],
        p.task.describe(test.targets[shown]),
        p.task.describe(clean_pred[shown]),
        p.task.describe(triggered_pred[shown]),
        f"{cfg.data.name}, {cfg.trigger.kind} trigger, target {target_name}",
    )
    bins = getattr(p.task, "bins", None)
    binned = test.metadata.get("binned_output")
    if bins is not None:  # a regression model evaluated on bins
        predicted = (bins.assign(clean_pred), bins.assign(triggered_pred))
        write_confusions(run_dir, bins.name, bins.edges(), bins.assign(test.targets), *predicted)
    elif binned is not None:  # reference 003's classification variant: the classes are bins
        edges = test.metadata["bin_edges"]
        write_confusions(run_dir, binned, edges, test.targets, clean_pred, triggered_pred)
    if cfg.output.save_model:  # the attacked model, before any defence repairs it
        write_bytes_atomic(run_dir / "model.safetensors", _model_bytes(p.model))
    defense = None
    if cfg.defense.kind != "none":
        before = {k: history[-1][k] for k in p.task.metric_names}
        defense = apply_defense(p, before, evaluate, triggered_test, poisoned, run_dir)

    final = history[-1]
    summary = {
        "status": "complete",
        "run_dir": str(run_dir),
        "task": "regression" if p.data.is_regression else "classification",
        "final": {k: final[k] for k in ("train_loss", *p.task.metric_names)},
        "poison": {
            "rate": cfg.poison.rate,
            "count": poisoned.count,
            "fraction": poisoned.fraction,
            "clean_train_size": len(p.data.train),
            "train_size": len(poisoned.train),
            "label_mode": cfg.poison.label_mode,
            "mode": cfg.poison.mode,
            "target": cfg.poison.target,
            "target_name": target_name,
        },
        "data": {
            "name": cfg.data.name,
            "shape": list(p.data.shape),
            "num_classes": len(p.data.class_names),
            "outputs": p.data.target_names if p.data.is_regression else None,
            "label_kind": p.data.label_kind if p.data.is_regression else None,
            "binned_output": p.data.train.metadata.get("binned_output"),
            "train_size": len(p.data.train),
            "test_size": len(test),
        },
        "stealth": {"sample": min(STEALTH_SAMPLE, len(test)), **stealth},
        "defense": defense,
        "protocol": protocol,
        "model": {
            "name": cfg.model.name,
            "parameters": sum(t.numel() for t in p.model.parameters()),
        },
        "epochs": total_epochs,
        "seed": cfg.train.seed,
        "split_seed": cfg.split_seed,
        "device": str(p.device),
        "timings": {
            "load_s": p.load_time_s,
            "poison_s": poison_time,
            "train_s": train_time,
            "eval_s": eval_time,
            "total_s": time.perf_counter() - started,
            "train_images_per_s": float(np.mean([h["train_images_per_s"] for h in history])),
        },
        "versions": library_versions(),
        "git": git_commit(),
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return RunResult(run_dir, summary, history)


__all__ = [
    "RunResult",
    "derive_seeds",
    "metric_label",
    "metrics_columns",
    "prepare",
    "read_metrics",
    "run_experiment",
]
