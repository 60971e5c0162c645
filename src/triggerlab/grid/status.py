"""Where each run of a grid stands: done, failed, running, queued, lost, unfinished or not
started, from its run folder and (for Slurm grids) what Slurm says about its job.

It reads the grid folder and asks ``squeue`` (and ``sacct``); it writes nothing and takes no
lock, so it answers while the grid runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triggerlab.files import read_json
from triggerlab.grid.slurm_queue import (
    QUEUED,
    RUNNING,
    ended_cause,
    job_states,
    read_jobs,
    slurm_reachable,
)
from triggerlab.grid.store import read_manifest, run_of
from triggerlab.run.rundir import FAILED

STATES = ("done", "running", "queued", "failed", "lost", "unfinished", "not started", "unknown")


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    cell: dict[str, Any]
    role: str
    repeat: int
    state: str
    detail: str  # the job, the error or the cause


def _failure(path: Path) -> str:
    try:
        record = read_json(path / FAILED)
        return f"run error: {record.get('error')}: {record.get('message')}"
    except Exception:
        return "run error"


def _one(
    grid_dir: Path,
    entry: dict[str, Any],
    job: dict[str, Any] | None,
    states: dict[str, str] | None,
) -> tuple[str, str]:
    run = run_of(grid_dir, entry["id"])
    if run.is_complete():
        return "done", ""
    job_id = job["job"] if job else None
    state = states.get(job_id) if job_id and states is not None else None
    if job_id and state in RUNNING:
        return "running", f"job {job_id}"
    if job_id and state in QUEUED:
        return "queued", f"job {job_id} ({state.lower()})"
    if (run.path / FAILED).exists():
        return "failed", _failure(run.path)
    if job_id and states is None:
        return "unknown", f"job {job_id}; Slurm cannot be asked from here"
    if job_id:
        cause = ended_cause(grid_dir, job_id, state)
        return "lost", f"job {job_id} ended ({state or 'no longer known'}): {cause}"
    if run.path.is_dir():
        return "unfinished", "started, not running now"
    return "not started", ""


def grid_status(grid_dir: Path | str) -> list[RunStatus]:
    """One status per run of the manifest, in its order."""
    grid_dir = Path(grid_dir)
    entries = read_manifest(grid_dir)["runs"]
    jobs = read_jobs(grid_dir)
    states: dict[str, str] | None = {}
    if jobs:
        states = job_states([j["job"] for j in jobs.values()]) if slurm_reachable() else None
    statuses = []
    for e in entries:
        state, detail = _one(grid_dir, e, jobs.get(e["id"]), states)
        statuses.append(RunStatus(e["id"], e["cell"], e["role"], e["repeat"], state, detail))
    return statuses


def count_states(statuses: list[RunStatus]) -> str:
    """``12 runs: 5 done, 3 running, 4 queued``."""
    counts = Counter(s.state for s in statuses)
    parts = [f"{counts[state]} {state}" for state in STATES if counts[state]]
    return f"{len(statuses)} runs: " + ", ".join(parts)
