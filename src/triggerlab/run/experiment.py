"""One run as a short sequence of named stages: prepare, poison, train, draw, defend, summarise.

Nothing touches the disk until every input has been checked (``prepare``), so
a rejected config leaves no trace. ``summary.json`` is written last: a run
directory without it is unfinished or crashed.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from triggerlab.attack.tasks import Task
from triggerlab.config import ExperimentConfig, PoisonConfig
from triggerlab.data import DataSplit, ImageDataset, prepare_data
from triggerlab.errors import ConfigError, Interrupted, RunFailed, TriggerlabError
from triggerlab.models import ModelInfo
from triggerlab.progress import Reporter, reporting
from triggerlab.run import stages, training_stages
from triggerlab.run.inputs import TrainingInputs, training_inputs
from triggerlab.run.prepare import CheckedRun, check_model, check_run
from triggerlab.run.rundir import CONFIG, RunDir, metrics_columns
from triggerlab.run.shared_training import SharedTraining, TrainingRecord
from triggerlab.train.checkpoint import Checkpoint, read_checkpoint, remove_checkpoint
from triggerlab.train.devices import Precision, resolve_device
from triggerlab.triggers import Trigger

# Appending a stream keeps the others' seeds: SeedSequence children depend on their index only.
SEED_STREAMS = ("poison", "test_trigger", "init", "order", "defense", "finetune", "augment")


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
    Precision(cfg.train.precision, device)  # fp16 needs CUDA: refused before anything is written
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
    cfg: ExperimentConfig,
    run_dir: Path | str | None = None,
    progress: Reporter | None = None,
    *,
    resume: bool = False,
    shared: SharedTraining | None = None,
) -> RunResult:
    """Run one experiment end to end and return its summary (also in ``summary.json``).

    By default the run goes to ``output.directory/output.name`` or a generated name. When
    that name holds a killed run of this same config with a checkpoint, the run continues
    from it; any other taken name gets a numeric suffix. An explicit ``run_dir`` must be
    empty or absent. With ``resume``, ``run_dir`` is an unfinished run of this config,
    continued from its last checkpoint (or started again in place when it has none).
    With ``shared``, the trained model is taken from there when another run saved it,
    and saved there otherwise (``shared_training``: train once, defend many).
    """
    started = time.perf_counter()
    with torch_threads(cfg.train.threads), reporting(progress):
        p = prepare(cfg)
        run, checkpoint = _open_run(cfg, None if run_dir is None else Path(run_dir), resume)
        run.write_config(cfg)
        try:
            return _run_stages(p, run, started, progress, checkpoint, shared)
        except RunFailed as exc:
            run.write_failed(exc)
            raise RunFailed(f"{exc} (recorded in {run.path / 'failed.json'})") from None
        except KeyboardInterrupt:
            saved = read_checkpoint(run.path)
            raise Interrupted(run.path, None if saved is None else len(saved.history)) from None
        except TriggerlabError:
            if checkpoint is None and not resume:  # refused input: leave no half-written run
                shutil.rmtree(run.path, ignore_errors=True)
            raise


def resume_run(run_dir: Path | str, progress: Reporter | None = None) -> RunResult:
    """Continue a killed run from its last checkpoint, with the config it was started with."""
    run = RunDir(Path(run_dir))
    if not (run.path / CONFIG).is_file():
        raise ConfigError(f"{run.path}: not a run directory (no {CONFIG}) to resume")
    return run_experiment(run.read_config(), run.path, progress, resume=True)


def _open_run(
    cfg: ExperimentConfig, run_dir: Path | None, resume: bool
) -> tuple[RunDir, Checkpoint | None]:
    """The run's folder, and the checkpoint it continues from (None: from the start)."""
    if resume:
        assert run_dir is not None, "resume needs the run's folder"
        run = RunDir(run_dir)
        return run, run.prepare_resume()
    stem = f"{cfg.data.name}-{cfg.model.name}-{cfg.trigger.kind}"
    if run_dir is not None:
        return RunDir.allocate(run_dir.parent, run_dir.name, stem, exact=True), None
    if cfg.output.name is not None:
        named = RunDir(cfg.output.directory / cfg.output.name)
        if named.continues(cfg):  # rerunning a killed run continues it
            checkpoint = named.prepare_resume()
            assert checkpoint is not None
            warnings.warn(
                f"output.name: {named.path} holds this run, killed after epoch "
                f"{len(checkpoint.history)}; continuing it from its checkpoint",
                stacklevel=3,
            )
            return named, checkpoint
    return RunDir.allocate(cfg.output.directory, cfg.output.name, stem), None


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


def _train(
    p: Prepared,
    attack: stages.Attack,
    inputs: TrainingInputs,
    evaluate: stages.Evaluator,
    log: training_stages.EpochLog,
    progress: Reporter | None,
    checkpoint: Checkpoint | None,
) -> TrainingRecord:
    """Train (and fine-tune, under reference 000's protocol) the run's model."""
    if checkpoint is not None:  # the epochs before the kill, as metrics.csv had them
        log.records = [training_stages.strip_stage(r) for r in checkpoint.history]
    train_start = time.perf_counter()
    history = training_stages.train_stage(p, attack, inputs, evaluate, log, progress, checkpoint)
    protocol = None
    if p.data.finetune is not None:
        protocol = training_stages.finetune_stage(
            p, inputs, evaluate, history, log, progress, checkpoint
        )
    return TrainingRecord(history, log.records, protocol, time.perf_counter() - train_start)


def _run_stages(
    p: Prepared,
    run: RunDir,
    started: float,
    progress: Reporter | None,
    checkpoint: Checkpoint | None,
    shared: SharedTraining | None = None,
) -> RunResult:
    cfg = p.cfg
    attack = stages.poison_stage(p, run)
    inputs = training_inputs(p, progress)
    evaluate = stages.evaluator_for(p, attack, inputs)
    log = training_stages.EpochLog(run, metrics_columns(p.task.metric_names))
    with shared.lock() if shared is not None else contextlib.nullcontext():
        record = shared.load_into(p.model) if shared is not None else None
        if record is None:
            record = _train(p, attack, inputs, evaluate, log, progress, checkpoint)
            if shared is not None:
                shared.save(p.model, record)
        else:  # trained by another run of the grid: its epochs, as it logged them
            log.replay(record.log_records)
            evaluate(p.model)  # the predictions the figures draw
    history, protocol, train_time = record.history, record.protocol, record.train_s
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
    cache = training_stages.forward_counts(p, inputs)
    sections = {
        "defense": defense,
        "protocol": protocol,
        "timings": timings,
        "feature_cache": cache,
    }
    summary = stages.build_summary(p, run, attack, history, sections)
    if checkpoint is not None:
        summary["resumed_from_epoch"] = len(checkpoint.history)
    run.write_summary(summary)
    if not cfg.train.keep_checkpoints:
        remove_checkpoint(run.path)
    return RunResult(run.path, summary, history)
