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
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from triggerlab.config import ExperimentConfig
from triggerlab.errors import ArgumentError
from triggerlab.grid.gpus import GpuShare, device_ids, pin_worker
from triggerlab.grid.plan import PlannedRun
from triggerlab.grid.store import run_dir
from triggerlab.run.rundir import RunDir
from triggerlab.run.shared_training import TRAINED

Finished = Iterator[tuple[PlannedRun, dict[str, Any]]]  # each run and its result, as it ends


def run_arguments(run: PlannedRun, grid_dir: Path, threads: int | None) -> tuple[Any, ...]:
    """``execute_run``'s arguments for one planned run."""
    trained = None
    if run.training_key is not None:
        trained = (str(grid_dir / TRAINED), run.training_key)
    config = run.config.model_dump(mode="json")
    return (config, str(run_dir(grid_dir, run.run_id)), threads, trained)


def execute_run(
    config: dict[str, Any],
    directory: str,
    threads: int | None = None,
    trained: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Run one experiment into ``directory``: continued from its checkpoint when a killed run
    left one, else from scratch; with ``trained`` (folder, key), its trained model is shared
    with the grid's other runs of that key. Failures are recorded, not raised."""
    import torch

    from triggerlab.run.experiment import run_experiment
    from triggerlab.run.shared_training import SharedTraining

    if threads:
        torch.set_num_threads(threads)
    path = Path(directory)
    start = time.perf_counter()
    try:
        cfg = ExperimentConfig.model_validate(config)
        resume = RunDir(path).continues(cfg)
        if not resume:
            shutil.rmtree(path, ignore_errors=True)
        shared = None if trained is None else SharedTraining(Path(trained[0]), trained[1])
        result = run_experiment(cfg, run_dir=path, resume=resume, shared=shared)
    except Exception as exc:  # a failed run must not stop the grid: record it and go on
        error = RunDir(path).write_failed(exc)
        return {"ok": False, "seconds": time.perf_counter() - start, **error}
    return {"ok": True, "seconds": time.perf_counter() - start, "final": result.summary["final"]}


def _start_worker(
    threads: int | None, counter: Synchronized[int] | None = None, gpus: list[str] | None = None
) -> None:
    """Worker initialiser: ask Linux to kill this worker when the grid process dies, and
    pin it to its GPU when runs share GPUs."""
    if counter is not None and gpus:
        pin_worker(counter, gpus)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_local(
    todo: list[PlannedRun],
    grid_dir: Path,
    workers: int,
    threads: int | None,
    share: GpuShare | None = None,
) -> Finished:
    """In this process (one worker) or in ``workers`` spawned processes, each pinned to a GPU
    when ``share`` says runs share GPUs; yields each run with its result as it ends."""
    if workers == 1:
        for run in todo:
            yield run, execute_run(*run_arguments(run, grid_dir, threads))
        return
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    gpus = device_ids(share) if share is not None else None
    initargs = (threads, context.Value("i", 0), gpus)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=initargs
    ) as pool:
        pending: dict[Future[dict[str, Any]], PlannedRun] = {
            pool.submit(execute_run, *run_arguments(r, grid_dir, None)): r for r in todo
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                run = pending.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool as exc:
                    outcome = {"ok": False, "error": "BrokenProcessPool", "message": str(exc)}
                yield run, outcome


@contextlib.contextmanager
def ray_session(address: str | None, share: GpuShare | None) -> Iterator[None]:
    """Connect to Ray (starting a local instance unless ``address`` names a cluster) and check
    it has GPUs when runs are to share them; disconnect at the end if connected here."""
    try:
        import ray
    except ImportError:
        raise ArgumentError("executor", "'ray' needs Ray: pip install 'triggerlab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArgumentError(
                "address",
                f"cannot connect to a Ray cluster at {address!r} ({first}); start the cluster "
                "first, or leave the address unset to start a local Ray on this machine",
            ) from None
    try:
        if share is not None and not ray.cluster_resources().get("GPU"):
            raise ArgumentError("gpus_per_run", "the Ray cluster has no GPU to share")
        yield
    finally:
        if started_here:
            ray.shutdown()


def run_ray(
    todo: list[PlannedRun],
    grid_dir: Path,
    threads: int | None,
    share: GpuShare | None = None,
) -> Finished:
    """One Ray task per run (inside ``ray_session``), asking for a GPU when the run trains on
    CUDA, or for ``share.fraction`` of one when runs share GPUs; yields each run with its
    result as it ends."""
    import ray

    task = ray.remote(execute_run)
    pending = {}
    for run in todo:
        gpus = 1 if run.config.train.device == "cuda" else 0
        gpus = share.fraction if share is not None else gpus
        options = task.options(num_cpus=threads or 1, num_gpus=gpus, max_retries=0)
        ref = options.remote(*run_arguments(run, grid_dir, threads))
        pending[ref] = run
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        run = pending.pop(done[0])
        try:
            outcome = ray.get(done[0])
        except Exception as exc:  # the task itself died (node lost, out of memory)
            outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        yield run, outcome
