"""Grids as Slurm job arrays, submitted through submitit.

The runs of a grid go to Slurm as one job array (``sbatch --array``), each task running one
run with ``execute_run``: a run that finds its own checkpoint continues from it. A job that
Slurm requeues (preemption with ``PreemptMode=REQUEUE``, or submitit's requeue on the
time-limit signal, ``USR2`` 90 s before the limit) therefore continues its run where its last
checkpoint left it (``train.checkpoint_every``; without checkpoints it starts the run over).

The submitting command then waits, polling ``squeue``, and yields each run as it ends. A
job that ends without a result (cancelled, preempted without requeue, its node failed, out
of time) is submitted again, up to ``retries`` times, its run continuing from its checkpoint;
a run that failed for its own reasons is reported as a run error and not retried. With
``wait=False`` the command returns once the array is queued; ``grid.status`` then says what
is queued, running, done or failed, and running the grid again attaches to the jobs still
queued or running instead of submitting them twice.

The grid folder must be on storage that the cluster's nodes share (it holds the job files),
and the jobs run the Python that submitted them (a virtual environment on shared storage).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triggerlab.errors import ArgumentError
from triggerlab.files import read_json, waiting_lock
from triggerlab.grid.execute import Finished, execute_run, run_arguments
from triggerlab.grid.failures import RETRIED, RUN_ERROR, TIME_LIMIT
from triggerlab.grid.plan import PlannedRun
from triggerlab.grid.slurm_options import SlurmOptions
from triggerlab.grid.slurm_queue import (
    cancel,
    ended_cause,
    is_live,
    job_states,
    log_tail,
    read_jobs,
    slurm_folder,
    slurm_reachable,
    write_jobs,
)
from triggerlab.grid.store import run_of


class SlurmRun:
    """One run as the callable of a Slurm job (pickled by submitit).

    submitit calls ``checkpoint`` when the job gets the time-limit or preemption signal and
    requeues the job with what it returns: the same run, which then continues from its last
    checkpoint. The run's lock keeps a cancelled job that is still dying from writing while
    its replacement starts.
    """

    def __call__(
        self,
        config: dict[str, Any],
        directory: str,
        threads: int | None,
        trained: tuple[str, str] | None,
        lock: str,
    ) -> dict[str, Any]:
        with waiting_lock(Path(lock)):
            return execute_run(config, directory, threads, trained)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _executor(grid_dir: Path, options: SlurmOptions, threads: int, name: str) -> Any:
    import submitit

    executor = submitit.SlurmExecutor(folder=slurm_folder(grid_dir))
    parameters: dict[str, Any] = {
        "job_name": f"triggerlab-{name}",
        "time": options.time_min,
        "cpus_per_task": threads,
        "additional_parameters": dict(options.extra),
    }
    if options.partition:
        parameters["partition"] = options.partition
    if options.mem_gb is not None:
        parameters["mem"] = f"{round(options.mem_gb * 1024)}M"
    if options.gpus:
        parameters["gpus_per_node"] = options.gpus
    if options.parallel is not None:
        parameters["array_parallelism"] = options.parallel
    executor.update_parameters(**parameters)
    return executor


def _lock_path(grid_dir: Path, identity: str) -> str:
    return str(slurm_folder(grid_dir) / "locks" / f"{identity}.lock")


def _submit(executor: Any, runs: list[PlannedRun], grid_dir: Path, threads: int) -> list[str]:
    """The runs as one job array; their job ids, in order."""
    job = SlurmRun()
    try:
        with executor.batch():
            jobs = [
                executor.submit(
                    job, *run_arguments(r, grid_dir, threads), _lock_path(grid_dir, r.run_id)
                )
                for r in runs
            ]
    except Exception as exc:  # sbatch refused the array (its message says why)
        said = " ".join(str(exc).split())[:300]
        raise ArgumentError("executor", f"Slurm refused the job array: {said}") from None
    return [j.job_id for j in jobs]


@dataclass
class _Waiting:
    run: PlannedRun
    job: str
    lost: list[str]
    ended_at: float | None = None


def _result(grid_dir: Path, job_id: str) -> dict[str, Any] | None:
    """The job's outcome when it left one: ``execute_run``'s, or the error submitit caught."""
    import submitit

    job = submitit.SlurmJob(folder=slurm_folder(grid_dir), job_id=job_id)
    if not job.paths.result_pickle.exists():
        return None
    try:
        return dict(job.result())
    except Exception as exc:  # the job failed outside the run: say so with its last lines
        text = str(exc)
        cause = TIME_LIMIT if "timed-out" in text else RUN_ERROR
        last = " ".join(text.strip().splitlines()[-3:])[:300]
        return {"ok": False, "error": type(exc).__name__, "message": last, "cause": cause}


def _without_result(grid_dir: Path, waiting: _Waiting, state: str | None) -> dict[str, Any]:
    """The outcome of a job that ended and left no result: its run, when the run finished
    all the same, else why the job ended."""
    run = run_of(grid_dir, waiting.run.run_id)
    if run.is_complete():
        summary = read_json(run.path / "summary.json")
        return {"ok": True, "final": summary.get("final", {})}
    cause = ended_cause(grid_dir, waiting.job, state)
    tail = " ".join(log_tail(grid_dir, waiting.job, lines=2).split())[:200]
    message = f"job {waiting.job} ended ({state or 'no longer known to Slurm'}) without a result"
    return {
        "ok": False,
        "error": "SlurmJob",
        "message": message + (f"; its log ends: {tail}" if tail else ""),
        "cause": cause,
    }


class SlurmGrid:
    """The jobs of one grid: submitted, attached to, waited for and retried."""

    def __init__(
        self, grid_dir: Path, options: SlurmOptions, threads: int, name: str, retries: int
    ) -> None:
        self.grid_dir = grid_dir
        self.options = options
        self.threads = threads
        self.retries = retries
        self.executor = _executor(grid_dir, options, threads, name)
        self.jobs = read_jobs(grid_dir)
        self.waiting: dict[str, _Waiting] = {}

    def start(self, todo: list[PlannedRun]) -> None:
        """Attach to the runs' jobs still queued or running; submit the others as one array."""
        known = {r.run_id: self.jobs[r.run_id] for r in todo if r.run_id in self.jobs}
        states = job_states([entry["job"] for entry in known.values()])
        if states is None:
            raise ArgumentError("executor", "Slurm does not answer (squeue failed); try again")
        fresh = []
        for run in todo:
            entry = known.get(run.run_id)
            if entry is not None and is_live(states.get(entry["job"])):
                self.waiting[run.run_id] = _Waiting(run, entry["job"], list(entry.get("lost", [])))
            else:
                fresh.append(run)
        self._submit(fresh, {r.run_id: [] for r in fresh})

    def _submit(self, runs: list[PlannedRun], lost: dict[str, list[str]]) -> None:
        if not runs:
            return
        ids = _submit(self.executor, runs, self.grid_dir, self.threads)
        for run, job in zip(runs, ids, strict=True):
            self.waiting[run.run_id] = _Waiting(run, job, lost[run.run_id])
        self._save()

    def _save(self) -> None:
        for identity, waiting in self.waiting.items():
            self.jobs[identity] = {"job": waiting.job, "lost": waiting.lost}
        write_jobs(self.grid_dir, self.jobs)

    def in_flight(self) -> list[str]:
        return list(self.waiting)

    def finished(self, sleep: Callable[[float], None] = time.sleep) -> Finished:
        """Poll Slurm until every run has ended, yielding each with its outcome as it ends;
        a run whose job was lost is submitted again instead (at most ``retries`` times)."""
        while self.waiting:
            states = job_states([w.job for w in self.waiting.values()])
            if states is None:  # Slurm busy: ask again later rather than call jobs lost
                sleep(self.options.poll_s)
                continue
            ended, again = self._poll(states)
            yield from ended
            if again:
                self._resubmit(again)
            elif self.waiting:
                self._save()
                sleep(self.options.poll_s)
        write_jobs(self.grid_dir, self.jobs)

    def _poll(
        self, states: dict[str, str]
    ) -> tuple[list[tuple[PlannedRun, dict[str, Any]]], list[_Waiting]]:
        """The runs that ended since the last poll, and the lost ones to submit again."""
        ended, again = [], []
        for identity, waiting in list(self.waiting.items()):
            outcome = self._outcome(waiting, states.get(waiting.job))
            if outcome is None:
                continue
            cause = outcome.get("cause")
            if not outcome["ok"] and cause in RETRIED and len(waiting.lost) < self.retries:
                waiting.lost.append(str(cause))
                again.append(waiting)
                continue
            del self.waiting[identity]
            if waiting.lost:
                outcome["retried"] = list(waiting.lost)
            ended.append((waiting.run, outcome))
        return ended, again

    def _outcome(self, waiting: _Waiting, state: str | None) -> dict[str, Any] | None:
        """The job's outcome once it has ended; None while it is queued or running, and for a
        short while after it ended without a result (the file may appear late on NFS)."""
        outcome = _result(self.grid_dir, waiting.job)
        if outcome is not None:
            return outcome
        if is_live(state):
            waiting.ended_at = None
            return None
        waiting.ended_at = waiting.ended_at or time.monotonic()
        if time.monotonic() - waiting.ended_at < max(2 * self.options.poll_s, 5.0):
            return None
        return _without_result(self.grid_dir, waiting, state)

    def _resubmit(self, lost: list[_Waiting]) -> None:
        """Cancel what is left of the lost jobs (a preempted job Slurm would requeue must not
        run beside its replacement), then submit their runs again as one array."""
        cancel([w.job for w in lost])
        for waiting in lost:
            del self.waiting[waiting.run.run_id]
        self._submit([w.run for w in lost], {w.run.run_id: w.lost for w in lost})


def live_jobs(grid_dir: Path) -> list[str]:
    """Runs of the grid whose Slurm jobs are still queued or running (empty without Slurm)."""
    jobs = read_jobs(grid_dir)
    if not jobs or not slurm_reachable():
        return []
    states = job_states([entry["job"] for entry in jobs.values()]) or {}
    return [identity for identity, entry in jobs.items() if is_live(states.get(entry["job"]))]
