"""Running a grid: plan it, skip what is finished, run the rest on the chosen executor (in
this process, worker processes, Ray, or Slurm job arrays) and keep the manifest current."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from triggerlab.config import ExperimentConfig
from triggerlab.errors import ArgumentError, TriggerlabError
from triggerlab.files import argument, check_folder, created_folder, missing_folders
from triggerlab.grid.execute import Finished
from triggerlab.grid.executors import ray_session, run_local, run_ray
from triggerlab.grid.failures import DEFAULT_RETRIES, cause_of
from triggerlab.grid.gpus import GpuShare, gpu_share, local_workers
from triggerlab.grid.plan import (
    MAX_RUNS,
    PlannedRun,
    plan_grid,
    preflight,
    trainers_first,
)
from triggerlab.grid.slurm import SlurmGrid, live_jobs
from triggerlab.grid.slurm_options import SlurmOptions, check_options, check_request, check_slurm
from triggerlab.grid.spec import GridSpec
from triggerlab.grid.stacking import DEFAULT_STACK, Stack, check_stack
from triggerlab.grid.store import (
    Existing,
    earlier_runs,
    grid_lock,
    run_of,
    write_manifest,
)
from triggerlab.progress import Reporter, Update, report

Executor = Literal["local", "ray", "slurm"]
SLURM_THREADS = 4  # a Slurm job's CPUs when not given: enough to feed a GPU, few to wait for


@dataclass
class GridOutcome:
    """``failed``: run id -> error; ``causes``: run id -> why (``grid.failures``);
    ``retried``: run id -> causes of the lost attempts before the one that counted;
    ``submitted``: runs left queued or running on Slurm (not waited for)."""

    total: int
    skipped: int
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    causes: dict[str, str] = field(default_factory=dict)
    retried: dict[str, list[str]] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
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


def _check_runs_use_gpus(plan: list[PlannedRun]) -> None:
    on_cpu = [r.run_id for r in plan if r.config.train.device == "cpu"]
    if on_cpu:
        raise ArgumentError(
            "gpus_per_run",
            f"{len(on_cpu)} of {len(plan)} runs train on the CPU (train.device: cpu); "
            "set base.train.device to cuda or auto to share GPUs",
        )


def _check_arguments(
    workers: int | None, threads: int | None, executor: str, retries: int, wait: bool
) -> None:
    if workers is not None and workers < 1:
        raise ArgumentError("workers", f"expected at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ArgumentError("threads", f"expected at least 1, got {threads}")
    if executor not in ("local", "ray", "slurm"):
        raise ArgumentError("executor", f"expected 'local', 'ray' or 'slurm', got {executor!r}")
    if not 0 <= retries <= 100:
        raise ArgumentError("retries", f"expected 0 to 100, got {retries}")
    if not wait and executor != "slurm":
        raise ArgumentError("wait", "only Slurm jobs outlive the command (executor 'slurm')")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ArgumentError("executor", "'ray' needs Ray: pip install 'triggerlab[ray]'")
    if executor == "slurm":
        check_slurm()


def _check_slurm_grid(
    plan: list[PlannedRun], options: SlurmOptions, gpus_per_run: float | None
) -> None:
    """What Slurm cannot do (share a GPU), and what a requeued job would miss (checkpoints)."""
    check_options(options)
    if gpus_per_run is not None:
        raise ArgumentError(
            "gpus_per_run", "a Slurm job asks for whole GPUs: give slurm.gpus instead"
        )
    if any(not r.config.train.checkpoint_every for r in plan):
        warnings.warn(
            "runs write no checkpoints (train.checkpoint_every: 0): a preempted or requeued "
            "Slurm job starts its run over; set base.train.checkpoint_every to continue instead",
            stacklevel=3,
        )


def _refuse_live_jobs(grid_dir: Path, executor: str) -> None:
    """A grid whose Slurm jobs still run is continued through Slurm only: a second executor
    would run the same runs beside them."""
    live = live_jobs(grid_dir) if executor != "slurm" else []
    if live:
        raise ArgumentError(
            "executor",
            f"{len(live)} runs of {grid_dir} are queued or running as Slurm jobs; wait for "
            "them with the slurm executor, or scancel them first",
        )


@dataclass(frozen=True)
class _Execution:
    """How the runs of a grid execute: where, with how many workers and threads each,
    retried how often, and (Slurm) asking for what and waited for or not."""

    executor: str
    workers: int
    threads: int
    share: GpuShare | None
    retries: int
    slurm: SlurmOptions
    wait: bool
    stack: Stack = DEFAULT_STACK  # most runs per stacked training (local executor only)

    def start(
        self, todo: list[PlannedRun], grid_dir: Path, name: str
    ) -> tuple[Finished, SlurmGrid | None]:
        """The runs as they end, and (Slurm) the jobs, which say what is left in flight."""
        where = grid_dir.absolute()  # tasks on other nodes, or in other folders, find it
        if self.executor == "ray":
            return run_ray(todo, where, self.threads, self.share, self.retries), None
        if self.executor == "slurm":
            jobs = SlurmGrid(where, self.slurm, self.threads, name, self.retries)
            jobs.start(todo)
            return (jobs.finished() if self.wait else iter(())), jobs
        return run_local(todo, grid_dir, self.workers, self.threads, self.share, self.stack), None


def _execution(
    plan: list[PlannedRun],
    executor: str,
    workers: int | None,
    threads: int | None,
    gpus_per_run: float | None,
    retries: int,
    slurm: SlurmOptions | None,
    wait: bool,
    stack: Stack = DEFAULT_STACK,
) -> _Execution:
    """The arguments checked, with their defaults filled in."""
    _check_arguments(workers, threads, executor, retries, wait)
    check_stack(stack)
    options = slurm or SlurmOptions()
    if executor == "slurm":
        _check_slurm_grid(plan, options, gpus_per_run)
    share = gpu_share(gpus_per_run, executor)  # type: ignore[arg-type]
    if share is not None:
        _check_runs_use_gpus(plan)
    workers = local_workers(share, workers) if executor == "local" else 1
    default = SLURM_THREADS if executor == "slurm" else max(1, (os.cpu_count() or 1) // workers)
    return _Execution(executor, workers, threads or default, share, retries, options, wait, stack)


def _fold(
    finished: Finished, outcome: GridOutcome, stage: str, total: int, progress: Reporter | None
) -> None:
    """Each run into the outcome as it ends, with a progress line."""
    for done, (run, result) in enumerate(finished, start=1):
        if result["ok"]:
            outcome.completed.append(run.run_id)
        else:
            outcome.failed[run.run_id] = f"{result['error']}: {result['message']}"
            outcome.causes[run.run_id] = cause_of(result)
        if result.get("retried"):
            outcome.retried[run.run_id] = list(result["retried"])
        note = f"[{done}/{total}] {run_note(run, result)}"
        report(progress, Update(stage, done, total, note, milestone=True))


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
    executor: Executor = "local",
    address: str | None = None,
    gpus_per_run: float | None = None,
    force: bool = False,
    existing: Existing = "refuse",
    max_runs: int | None = MAX_RUNS,
    progress: Reporter | None = None,
    retries: int = DEFAULT_RETRIES,
    slurm: SlurmOptions | None = None,
    wait: bool = True,
    stack: Stack = DEFAULT_STACK,
) -> GridOutcome:
    """Plan, check, then run every run that is not complete yet; return what happened.

    ``workers`` local processes (default: one, or one per GPU slot when sharing GPUs);
    ``threads`` torch threads per run (default: cores / workers; a Slurm job's CPUs, 4);
    ``gpus_per_run`` the fraction of a GPU each run gets (see ``grid.gpus``); ``max_runs``
    (None: any) refuses a larger spec before planning it. A folder holding
    another spec's runs is refused unless ``existing`` is ``extend`` or ``replace`` (see
    ``store.earlier_runs``). On Ray and Slurm, a run lost with its node (or preempted,
    cancelled) is started again up to ``retries`` times; ``slurm`` says what each Slurm job
    asks for, and ``wait=False`` returns once the Slurm jobs are queued (``submitted``).
    Run locally, runs that can train together do, up to ``stack`` at a time (``grid.stacking``;
    ``auto``: where it pays here; 1: each run alone); Ray and Slurm run each run alone.
    """
    grid_dir = Path(grid_dir)
    check_folder(grid_dir, argument("grid_dir"))  # a file, or not writable: before planning
    plan = plan_grid(spec, max_runs)
    how = _execution(plan, executor, workers, threads, gpus_per_run, retries, slurm, wait, stack)
    start = time.perf_counter()
    session = ray_session(address, how.share) if executor == "ray" else contextlib.nullcontext()
    with session, _new_folder_cleaned_up(grid_dir) as state, grid_lock(grid_dir):
        kept = earlier_runs(grid_dir, spec, plan, existing)
        _refuse_live_jobs(grid_dir, executor)
        preflight(plan)
        if executor == "slurm":
            check_request(how.slurm, how.threads)
        write_manifest(grid_dir, spec, plan, kept)
        state["written"] = True
        todo = trainers_first(
            [
                replace(r, config=with_threads(r.config, how.threads))
                for r in plan
                if force or not run_of(grid_dir, r.run_id).is_complete()
            ]
        )
        outcome = GridOutcome(total=len(plan), skipped=len(plan) - len(todo))
        report(progress, Update(spec.name or "grid", 0, len(todo)))
        finished, jobs = how.start(todo, grid_dir, spec.name or grid_dir.name)
        _fold(finished, outcome, spec.name or "grid", len(todo), progress)
        outcome.submitted = jobs.in_flight() if jobs is not None else []
    outcome.seconds = time.perf_counter() - start
    return outcome
