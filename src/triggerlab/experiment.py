"""One run as a short sequence of named stages: prepare, poison, train, draw, defend, summarise.

Nothing touches the disk until every input has been checked (``prepare``), so
a rejected config leaves no trace. ``summary.json`` is written last: a run
directory without it is unfinished or crashed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from triggerlab import stages
from triggerlab.checks import CheckedRun, check_model, check_run
from triggerlab.config import ExperimentConfig, PoisonConfig
from triggerlab.data import DataSplit, ImageDataset, prepare_data
from triggerlab.errors import ConfigError, RunFailed
from triggerlab.models import ModelInfo
from triggerlab.progress import Reporter
from triggerlab.rundir import RunDir, metrics_columns
from triggerlab.tasks import Task
from triggerlab.train import resolve_device
from triggerlab.training_inputs import training_inputs
from triggerlab.triggers import Trigger

# Appending a stream keeps the others' seeds: SeedSequence children depend on their index only.
SEED_STREAMS = ("poison", "test_trigger", "init", "order", "defense", "finetune")


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
    checked: CheckedRun
    model: nn.Module
    model_info: ModelInfo
    device: torch.device
    seeds: dict[str, int]
    load_time_s: float

    @property
    def data(self) -> DataSplit:
        return self.checked.data

    @property
    def trigger(self) -> Trigger:
        return self.checked.trigger

    @property
    def task(self) -> Task:
        return self.checked.task

    @property
    def poison(self) -> PoisonConfig:
        """As applied: reference 003's bins turn a target vector into a class."""
        return self.checked.poison

    @property
    def defender(self) -> ImageDataset | None:
        return self.checked.defender


def rebuild(run_dir: Path, device: str = "cpu") -> Prepared:
    """A finished run as it was after training: its data, trigger, task and trained model
    (the run must have saved its model)."""
    run = RunDir(run_dir)
    cfg = run.read_config([f"train.device={device}"])
    state = run.read_model_state()
    prepared = prepare(cfg)
    try:
        prepared.model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"{run.path}: its model.safetensors does not fit its config ({exc})"
        ) from None
    prepared.model.eval()
    return prepared


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Load data, check it against the config, build the model; ConfigError/DataFormatError on
    bad input."""
    device = resolve_device(cfg.train.device)
    start = time.perf_counter()
    data = prepare_data(cfg.data, cfg.split_seed)
    load_time = time.perf_counter() - start
    seeds = derive_seeds(cfg.train.seed)
    checked = check_run(cfg, data, seeds["defense"])
    torch.manual_seed(seeds["init"])  # weight init, and dropout draws during training
    model, info = check_model(cfg, checked.data)
    layout = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=layout)
    return Prepared(cfg, checked, model, info, device, seeds, load_time)


def run_experiment(
    cfg: ExperimentConfig, run_dir: Path | None = None, progress: Reporter | None = None
) -> RunResult:
    """Run one experiment end to end and return its summary (also in ``summary.json``).

    ``run_dir`` must be empty or absent; by default the run goes to
    ``output.directory/output.name`` or a generated name under ``output.directory``.
    """
    started = time.perf_counter()
    with torch_threads(cfg.train.threads):
        p = prepare(cfg)
        stem = f"{cfg.data.name}-{cfg.model.name}-{cfg.trigger.kind}"
        if run_dir is None:
            run = RunDir.allocate(cfg.output.directory, cfg.output.name, stem)
        else:
            run = RunDir.allocate(run_dir.parent, run_dir.name, stem)
        run.write_config(cfg)
        try:
            return _run_stages(p, run, started, progress)
        except RunFailed as exc:
            run.write_failed(exc)
            raise RunFailed(f"{exc} (recorded in {run.path / 'failed.json'})") from None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` CPU threads (None: as set), then restore the previous count."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_stages(p: Prepared, run: RunDir, started: float, progress: Reporter | None) -> RunResult:
    cfg = p.cfg
    attack = stages.poison_stage(p, run)
    inputs = training_inputs(p, progress)
    evaluate = stages.evaluator_for(p, attack, inputs)
    log = stages.EpochLog(run, metrics_columns(p.task.metric_names))
    train_start = time.perf_counter()
    history = stages.train_stage(p, attack, inputs, evaluate, log, progress)
    protocol = None
    if p.data.finetune is not None:
        protocol = stages.finetune_stage(p, inputs, evaluate, history, log, progress)
    train_time = time.perf_counter() - train_start
    stages.figure_stage(p, attack, evaluate, run)
    if cfg.output.save_model:  # the attacked model, before any defence repairs it
        run.write_model(p.model)
    before = {k: history[-1][k] for k in p.task.metric_names}
    defense = stages.defense_stage(p, attack, evaluate, before, run)
    timings = {
        "load_s": p.load_time_s,
        "poison_s": attack.seconds,
        "train_s": train_time,
        "eval_s": evaluate.seconds,
        "total_s": time.perf_counter() - started,
        "train_images_per_s": float(np.mean([h["train_images_per_s"] for h in history])),
    }
    cache = stages.forward_counts(p, inputs)
    sections = {
        "defense": defense,
        "protocol": protocol,
        "timings": timings,
        "feature_cache": cache,
    }
    summary = stages.build_summary(p, run, attack, history, sections)
    run.write_summary(summary)
    return RunResult(run.path, summary, history)
