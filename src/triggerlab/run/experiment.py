"""One run, top to bottom: prepare, poison, train, evaluate, draw, defend, summarise.

Nothing touches the disk until every input has been checked (``prepare``), so a
rejected config leaves no trace. Each stage returns what it produced; the run's
context (``RunContext``) is fixed once prepared. ``summary.json`` is written last:
a run directory without it is unfinished or crashed.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triggerlab.config import ExperimentConfig
from triggerlab.errors import ConfigError, Interrupted, RunFailed, TriggerlabError
from triggerlab.files import argument, check_folder, config_key, missing_folders, remove_if_empty
from triggerlab.progress import Reporter, reporting
from triggerlab.run import stages
from triggerlab.run.context import RunContext
from triggerlab.run.inputs import training_inputs
from triggerlab.run.lf_checks import RUN_COPY
from triggerlab.run.lf_pattern import run_pattern
from triggerlab.run.prepare import prepare
from triggerlab.run.rundir import CONFIG, RunDir, metrics_columns
from triggerlab.run.shared_training import SharedTraining, evaluation_key
from triggerlab.run.stack_group import stack_record
from triggerlab.run.training import forward_counts, stage_epochs, train
from triggerlab.train.checkpoint import (
    Checkpoint,
    read_checkpoint,
    remove_checkpoint,
    remove_stale_tensors,
)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]


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
    run_dir = None if run_dir is None else Path(run_dir)
    parent = cfg.output.directory if run_dir is None else run_dir.parent
    if not resume:  # a folder that cannot be written is refused before the data is loaded
        check_folder(
            parent, config_key("output.directory") if run_dir is None else argument("run_dir")
        )
    with torch_threads(cfg.train.threads), reporting(progress), contextlib.ExitStack() as held:
        ctx = prepare(cfg, functools.partial(run_pattern, cfg, train=surrogate_run))
        prepared = time.perf_counter()
        created = [] if resume else missing_folders(parent)
        try:
            run, checkpoint = open_run(cfg, run_dir, resume, held)
        except TriggerlabError:
            remove_if_empty(created)
            raise
        if checkpoint is not None:  # it must be one this config can have written
            checkpoint.check_plan(stage_epochs(ctx), metrics_columns(ctx.task.metric_names))
        run.write_config(cfg)
        keep_pattern(ctx, run)
        try:
            clock = Phases(started, {"prepare_s": prepared - started})
            clock.mark("open_s")  # the run's folder, its lock and config.yaml
            return _run(ctx, run, checkpoint, shared, progress, clock)
        except RunFailed as exc:
            run.write_failed(exc)
            raise RunFailed(f"{exc} (recorded in {run.path / 'failed.json'})") from None
        except KeyboardInterrupt:
            saved = None
            with contextlib.suppress(TriggerlabError):  # only to say where the run can go on
                saved = read_checkpoint(run.path)
            raise Interrupted(run.path, None if saved is None else len(saved.history)) from None
        except TriggerlabError:
            if checkpoint is None and not resume:  # refused input: leave no half-written run
                shutil.rmtree(run.path, ignore_errors=True)
                remove_if_empty(created)  # nor the folders made for it
            raise


def keep_pattern(ctx: RunContext, run: RunDir) -> None:
    """A copy of the low-frequency pattern the run computed (or read from the cache) in its
    folder: the run can be rebuilt from it, whatever becomes of the cache."""
    record = ctx.trigger_pattern
    if record is not None and record["source"] in ("computed", "reused"):
        shutil.copyfile(record["path"], run.path / RUN_COPY)


@dataclass
class Phases:
    """Seconds of a run's phases, each measured from the end of the one before."""

    started: float
    seconds: dict[str, float]

    def __post_init__(self) -> None:
        self.last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now


def _run(
    ctx: RunContext,
    run: RunDir,
    checkpoint: Checkpoint | None,
    shared: SharedTraining | None,
    progress: Reporter | None,
    clock: Phases,
) -> RunResult:
    attack = stages.poison(ctx, run)  # the poisoned training (and fine-tuning) set, test set
    clock.mark("poison_phase_s")
    inputs = training_inputs(ctx, progress)  # images, or the frozen body's cached features
    evaluate = stages.Evaluator.of(ctx, attack, inputs)
    clock.mark("inputs_s")
    trained = train(
        ctx, attack, inputs, evaluate, run=run, progress=progress, resume=checkpoint, shared=shared
    )
    clock.mark("train_phase_s")
    history = trained.record.history
    final = evaluate(inputs.model)  # the trained module's predictions, for the figures
    clock.mark("final_eval_s")
    stages.draw(ctx, attack, final, run)
    clock.mark("draw_s")
    if ctx.cfg.output.save_model:  # the attacked model, before any defence repairs it
        run.write_model(ctx.model)
    clock.mark("save_model_s")
    before = {k: history[-1][k] for k in ctx.task.metric_names}
    defense = stages.defend(ctx, attack, evaluate, before, run)
    clock.mark("defend_s")
    epochs_s = float(sum(h.get("train_time_s", 0.0) for h in history))
    timings = {
        "load_s": ctx.load_s,
        "poison_s": attack.seconds,
        "train_s": trained.record.train_s,
        "eval_s": evaluate.seconds,
        "train_images_per_s": float(np.mean([h["train_images_per_s"] for h in history])),
    }
    forwards = inputs.built + evaluate.forwards + trained.forwards
    sections = {
        "defense": defense,
        "protocol": trained.record.protocol,
        "timings": timings,
        "feature_cache": forward_counts(ctx, inputs, forwards),
        "stack": stack_record(),  # None: trained alone
    }
    if shared is not None:  # train once, defend (or evaluate) many
        sections["shared_training"] = {
            "key": shared.key,
            "trained_here": not trained.loaded,
            # False: the model was trained by a run with another trigger (clean baselines),
            # whose triggered metrics are not this run's: only the last epoch has them
            "epochs_measured_with_own_trigger": trained.record.evaluated
            in (None, evaluation_key(ctx.cfg)),
        }
    if ctx.trigger_pattern is not None:  # where the low-frequency pattern came from
        sections["trigger_pattern"] = ctx.trigger_pattern
    summary = stages.summarise(ctx, run, attack, history, sections)
    clock.mark("summarise_s")
    if checkpoint is not None:
        summary["resumed_from_epoch"] = len(checkpoint.history)
    run.remove_temporaries()  # a finished run holds only its own files
    total = time.perf_counter() - clock.started
    startup = process_startup_s(clock.started)
    timings.update(
        {
            "total_s": total,
            # the phases in order; the training epochs themselves (their optimiser steps,
            # not the evaluation after each) are ``epochs_s``, everything else is fixed cost
            "phases": {k: round(v, 6) for k, v in clock.seconds.items()},
            "epochs_s": epochs_s,
            "startup_s": startup,
            "fixed_s": total - epochs_s + (startup or 0.0),
        }
    )
    run.write_summary(summary)
    if ctx.cfg.train.keep_checkpoints:
        remove_stale_tensors(run.path)
    else:
        remove_checkpoint(run.path)
    return RunResult(run.path, summary, history)


_STARTUP_COUNTED = False


def surrogate_run(*args: Any, **kwargs: Any) -> RunResult:
    """``run_experiment`` for a run's clean surrogate (``lf_pattern``), inside that run: the
    process's start-up stays counted in the run's own summary."""
    global _STARTUP_COUNTED
    counted = _STARTUP_COUNTED
    try:
        return run_experiment(*args, **kwargs)
    finally:
        _STARTUP_COUNTED = counted


def process_startup_s(run_started: float) -> float | None:
    """Seconds from this process's start to its first run's start (interpreter, imports),
    read from /proc on Linux; None elsewhere and for every later run of the process."""
    global _STARTUP_COUNTED
    if _STARTUP_COUNTED:
        return None
    _STARTUP_COUNTED = True
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        import os

        alive = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, alive - (time.perf_counter() - run_started))


def resume_run(run_dir: Path | str, progress: Reporter | None = None) -> RunResult:
    """Continue a killed run from its last checkpoint, with the config it was started with."""
    run = RunDir(Path(run_dir))
    if not (run.path / CONFIG).is_file():
        raise ConfigError(f"{run.path}: not a run directory (no {CONFIG}) to resume")
    return run_experiment(run.read_config(), run.path, progress, resume=True)


def open_run(
    cfg: ExperimentConfig, run_dir: Path | None, resume: bool, held: contextlib.ExitStack
) -> tuple[RunDir, Checkpoint | None]:
    """The run's folder, locked for this process until ``held`` closes, and the checkpoint
    it continues from (None: from the start)."""
    if resume:
        assert run_dir is not None, "resume needs the run's folder"
        run = RunDir(run_dir)
        held.enter_context(run.lock())
        return run, run.prepare_resume()
    stem = f"{cfg.data.name}-{cfg.model.name}-{cfg.trigger.kind}"
    if run_dir is not None:
        run = RunDir.allocate(run_dir.parent, run_dir.name, stem, exact=True)
        held.enter_context(run.lock())
        return run, None
    if cfg.output.name is not None:
        named = RunDir(cfg.output.directory / cfg.output.name)
        if named.continues(cfg):  # rerunning a killed run continues it
            held.enter_context(named.lock())
            checkpoint = named.prepare_resume()
            assert checkpoint is not None
            warnings.warn(
                f"output.name: {named.path} holds this run, killed after epoch "
                f"{len(checkpoint.history)}; continuing it from its checkpoint",
                stacklevel=3,
            )
            return named, checkpoint
    run = RunDir.allocate(cfg.output.directory, cfg.output.name, stem)
    held.enter_context(run.lock())
    return run, None


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
