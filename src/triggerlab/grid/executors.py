"""Running planned runs: in this process, in local worker processes, or as Ray tasks.

Every executor calls ``execute_run`` for each run and hands its outcome to a
``report`` callback as soon as the run ends, in whatever order runs end.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import shutil
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from triggerlab.config import ExperimentConfig
from triggerlab.errors import ArgumentError
from triggerlab.grid.plan import PlannedRun
from triggerlab.grid.store import run_dir
from triggerlab.rundir import RunDir

Report = Callable[[PlannedRun, dict[str, Any]], None]


def execute_run(
    config: dict[str, Any], directory: str, threads: int | None = None
) -> dict[str, Any]:
    """Run one experiment into ``directory`` from scratch; failures are recorded, not raised."""
    import torch

    from triggerlab.experiment import run_experiment

    if threads:
        torch.set_num_threads(threads)
    path = Path(directory)
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    try:
        cfg = ExperimentConfig.model_validate(config)
        result = run_experiment(cfg, run_dir=path)
    except Exception as exc:  # a failed run must not stop the grid: record it and go on
        error = RunDir(path).write_failed(exc)
        return {"ok": False, "seconds": time.perf_counter() - start, **error}
    return {"ok": True, "seconds": time.perf_counter() - start, "final": result.summary["final"]}


def _die_with_parent(threads: int | None) -> None:
    """Worker initialiser: ask Linux to kill this worker when the grid process dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_local(
    todo: list[PlannedRun], grid_dir: Path, workers: int, threads: int | None, report: Report
) -> None:
    """In this process (one worker) or in ``workers`` spawned processes."""
    if workers == 1:
        for run in todo:
            config = run.config.model_dump(mode="json")
            report(run, execute_run(config, str(run_dir(grid_dir, run.run_id)), threads))
        return
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_die_with_parent, initargs=(threads,)
    ) as pool:
        pending: dict[Future[dict[str, Any]], PlannedRun] = {
            pool.submit(
                execute_run, r.config.model_dump(mode="json"), str(run_dir(grid_dir, r.run_id))
            ): r
            for r in todo
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                run = pending.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool as exc:
                    outcome = {"ok": False, "error": "BrokenProcessPool", "message": str(exc)}
                report(run, outcome)


def run_ray(
    todo: list[PlannedRun], grid_dir: Path, threads: int | None, address: str | None, report: Report
) -> None:
    """One Ray task per run, asking for a GPU when the run trains on CUDA."""
    try:
        import ray
    except ImportError:
        raise ArgumentError("executor", "'ray' needs Ray: pip install 'triggerlab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    task = ray.remote(execute_run)
    try:
        pending = {}
        for run in todo:
            gpus = 1 if run.config.train.device == "cuda" else 0
            options = task.options(num_cpus=threads or 1, num_gpus=gpus, max_retries=0)
            ref = options.remote(
                run.config.model_dump(mode="json"), str(run_dir(grid_dir, run.run_id)), threads
            )
            pending[ref] = run
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as exc:  # the task itself died (node lost, out of memory)
                outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
            report(run, outcome)
    finally:
        if started_here:
            ray.shutdown()
