"""Running a grid: plan it, skip what is finished, run the rest on the chosen executor and
keep the manifest current."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from triggerlab.config import ExperimentConfig
from triggerlab.errors import ArgumentError, TriggerlabError
from triggerlab.files import argument, check_folder, created_folder, missing_folders
from triggerlab.grid.executors import ray_session, run_local, run_ray
from triggerlab.grid.gpus import GpuShare, gpu_share, local_workers
from triggerlab.grid.plan import (
    MAX_RUNS,
    PlannedRun,
    plan_grid,
    preflight,
    trainers_first,
)
from triggerlab.grid.spec import GridSpec
from triggerlab.grid.store import (
    Existing,
    earlier_runs,
    grid_lock,
    run_of,
    write_manifest,
)
from triggerlab.progress import Reporter, Update, report


@dataclass
class GridOutcome:
    total: int
    skipped: int
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def with_threads(cfg: ExperimentConfig, threads: int) -> ExperimentConfig:
    """The run's config as it executes: its thread count recorded, so that rerunning the run's
    config.yaml alone reproduces its numbers (the run id leaves threads out)."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": threads})})


def run_note(run: PlannedRun, result: dict[str, Any]) -> str:
    """``<id> (grid, repeat 0; cell) clean_acc 0.972 asr 0.991``, or the failure."""
    if result["ok"]:
        shown = [k for k in result["final"] if k != "train_loss"][:2]  # the task's first metrics
        status = " ".join(f"{k} {result['final'][k]:.3f}" for k in shown)
    else:
        status = f"FAILED {result['error']}"
    cell = ", ".join(f"{k}={v}" for k, v in run.cell.items())
    return f"{run.run_id} ({run.role}, repeat {run.repeat}; {cell}) {status}"


def _check_runs_use_gpus(plan: list[PlannedRun], share: GpuShare | None) -> None:
    if share is None:
        return
    on_cpu = [r.run_id for r in plan if r.config.train.device == "cpu"]
    if on_cpu:
        raise ArgumentError(
            "gpus_per_run",
            f"{len(on_cpu)} of {len(plan)} runs train on the CPU (train.device: cpu); "
            "set base.train.device to cuda or auto to share GPUs",
        )


def _check_arguments(
    workers: int | None, threads: int | None, executor: str, grid_dir: Path
) -> None:
    check_folder(grid_dir, argument("grid_dir"))  # a file, or not writable: before planning
    if workers is not None and workers < 1:
        raise ArgumentError("workers", f"expected at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ArgumentError("threads", f"expected at least 1, got {threads}")
    if executor not in ("local", "ray"):
        raise ArgumentError("executor", f"expected 'local' or 'ray', got {executor!r}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ArgumentError("executor", "'ray' needs Ray: pip install 'triggerlab[ray]'")


@contextlib.contextmanager
def _new_folder_cleaned_up(grid_dir: Path) -> Iterator[dict[str, bool]]:
    """Create ``grid_dir``; remove it again, with the parents created for it, when a rejection
    came before any manifest was written: a refused grid leaves nothing behind."""
    created = missing_folders(grid_dir)
    state = {"written": False}
    with created_folder(grid_dir, argument("grid_dir")):
        try:
            yield state
        except TriggerlabError:
            if created and not state["written"]:
                shutil.rmtree(grid_dir, ignore_errors=True)
            raise


def run_grid(
    spec: GridSpec,
    grid_dir: Path | str,
    *,
    workers: int | None = None,
    threads: int | None = None,
    executor: Literal["local", "ray"] = "local",
    address: str | None = None,
    gpus_per_run: float | None = None,
    force: bool = False,
    existing: Existing = "refuse",
    max_runs: int | None = MAX_RUNS,
    progress: Reporter | None = None,
) -> GridOutcome:
    """Plan, check, then run every run that is not complete yet; return what happened.

    ``workers`` local processes (default: one, or one per GPU slot when sharing GPUs);
    ``threads`` torch threads per run (default: cores / workers); ``gpus_per_run`` the
    fraction of a GPU each run gets (see ``grid.gpus``); ``max_runs`` (None: any) refuses a
    larger spec before planning it. A folder holding another spec's runs is refused unless
    ``existing`` is ``extend`` or ``replace`` (see ``store.earlier_runs``)."""
    grid_dir = Path(grid_dir)
    _check_arguments(workers, threads, executor, grid_dir)
    share = gpu_share(gpus_per_run, executor)
    workers = local_workers(share, workers) if executor == "local" else 1
    plan = plan_grid(spec, max_runs)
    _check_runs_use_gpus(plan, share)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    start = time.perf_counter()
    session = ray_session(address, share) if executor == "ray" else contextlib.nullcontext()
    with session, _new_folder_cleaned_up(grid_dir) as state, grid_lock(grid_dir):
        kept = earlier_runs(grid_dir, spec, plan, existing)
        preflight(plan)
        write_manifest(grid_dir, spec, plan, kept)
        state["written"] = True
        todo = trainers_first(
            [
                replace(r, config=with_threads(r.config, threads))
                for r in plan
                if force or not run_of(grid_dir, r.run_id).is_complete()
            ]
        )
        report(progress, Update(spec.name or "grid", 0, len(todo)))
        finished = (
            run_ray(todo, grid_dir, threads, share)
            if executor == "ray"
            else run_local(todo, grid_dir, workers, threads, share)
        )
        completed: list[str] = []
        failed: dict[str, str] = {}
        for done, (run, result) in enumerate(finished, start=1):
            if result["ok"]:
                completed.append(run.run_id)
            else:
                failed[run.run_id] = f"{result['error']}: {result['message']}"
            note = f"[{done}/{len(todo)}] {run_note(run, result)}"
            report(progress, Update(spec.name or "grid", done, len(todo), note, milestone=True))
    return GridOutcome(
        total=len(plan),
        skipped=len(plan) - len(todo),
        completed=completed,
        failed=failed,
        seconds=time.perf_counter() - start,
    )
