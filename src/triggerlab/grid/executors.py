"""Running planned runs: in this process, in local worker processes, or as Ray tasks.

(Slurm job arrays: ``grid.slurm``.)

Every executor calls ``execute_run`` for each run and hands its outcome to a
``report`` callback as soon as the run ends, in whatever order runs end.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from triggerlab.errors import ArgumentError
from triggerlab.grid.execute import Finished, run_arguments
from triggerlab.grid.failures import (
    CANCELLED,
    DEFAULT_RETRIES,
    NODE_LOST,
    OUT_OF_MEMORY,
    RUN_ERROR,
)
from triggerlab.grid.gpus import GpuShare, device_ids, pin_worker
from triggerlab.grid.plan import PlannedRun
from triggerlab.grid.shipping import SHIPPED, clear_staging, execute_on_node, mark_session, unpack
from triggerlab.grid.stacking import DEFAULT_STACK, Stack, execute_stack, stack_groups


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
    stack: Stack = DEFAULT_STACK,
) -> Finished:
    """In this process (one worker) or in ``workers`` spawned processes, each pinned to a GPU
    when ``share`` says runs share GPUs; runs that can, train in stacks of up to ``stack``
    (``grid.stacking``; ``auto``: where it pays here; 1: each alone); yields each run with its
    result as it ends."""
    from triggerlab.grid.cost import kinds_for  # the planner's costs decide --stack auto

    units = stack_groups(todo, stack, kinds=kinds_for, workers=workers)
    if workers == 1:
        for unit in units:
            yield from zip(
                unit,
                execute_stack([run_arguments(r, grid_dir, threads) for r in unit]),
                strict=True,
            )
        return
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    gpus = device_ids(share) if share is not None else None
    initargs = (threads, context.Value("i", 0), gpus)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=initargs
    ) as pool:
        pending: dict[Future[list[dict[str, Any]]], list[PlannedRun]] = {
            pool.submit(execute_stack, [run_arguments(r, grid_dir, None) for r in unit]): unit
            for unit in units
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                unit = pending.pop(future)
                try:
                    outcomes = future.result()
                except BrokenProcessPool as exc:
                    broken = {"ok": False, "error": "BrokenProcessPool", "message": str(exc)}
                    outcomes = [dict(broken) for _ in unit]
                yield from zip(unit, outcomes, strict=True)


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
    retries: int = DEFAULT_RETRIES,
) -> Finished:
    """One Ray task per run (inside ``ray_session``), asking for a GPU when the run trains on
    CUDA, or for ``share.fraction`` of one when runs share GPUs; yields each run with its
    result as it ends.

    A task lost with its worker or node is started again elsewhere, up to ``retries`` times
    (Ray retries system failures only; a run's own errors are recorded, not raised). Nodes
    that do not share the grid folder ship their run folders back (``grid.shipping``).
    """
    import ray

    token = mark_session(grid_dir)
    task = ray.remote(execute_on_node)
    pending = {}
    for run in todo:
        gpus = 1 if run.config.train.device == "cuda" else 0
        gpus = share.fraction if share is not None else gpus
        options = task.options(
            num_cpus=threads or 1, num_gpus=gpus, max_retries=retries, retry_exceptions=False
        )
        arguments = run_arguments(run, grid_dir, threads)
        pending[options.remote(arguments, str(grid_dir), run.run_id, token)] = run
    staged = False
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as exc:  # the task itself died, and so did its retries
                outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
                outcome["cause"] = ray_cause(exc)
            shipped = outcome.pop(SHIPPED, None)
            if shipped is not None:
                staged = True
                unpack(grid_dir, run.run_id, shipped)
            yield run, outcome
    finally:
        if staged:  # some node ran runs in its own staging folder: clear those folders
            _clear_nodes(token)


def ray_cause(exc: BaseException) -> str:
    """What a Ray exception says about a lost task: its node or worker died, it was killed
    for memory or cancelled, or (anything else raised by the task) the run itself failed."""
    from ray import exceptions as rx

    if isinstance(exc, rx.OutOfMemoryError):
        return OUT_OF_MEMORY
    if isinstance(exc, rx.TaskCancelledError):
        return CANCELLED
    lost = (rx.NodeDiedError, rx.WorkerCrashedError, rx.LocalRayletDiedError, rx.ObjectLostError)
    if isinstance(exc, lost) or not isinstance(exc, rx.RayTaskError):
        return NODE_LOST
    return RUN_ERROR


def _clear_nodes(token: str) -> None:
    """Remove the session's staging folders on every live node (best effort: a node that does
    not answer within a minute keeps its temporary files)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    clear = ray.remote(clear_staging)
    refs = [
        clear.options(
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(token)
        for node in ray.nodes()
        if node.get("Alive")
    ]
    with contextlib.suppress(Exception):
        ray.wait(refs, num_returns=len(refs), timeout=60)
