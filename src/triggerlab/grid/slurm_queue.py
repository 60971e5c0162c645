"""What Slurm knows about a grid's jobs: the job of each run, and the state of each job.

The grid keeps ``<grid_dir>/slurm/jobs.json`` (written by the submitting command only): for
each run still handled through Slurm, its current job id and the causes of the attempts that
were lost and retried. The state of a job comes from ``squeue`` (jobs queued, running, or
ended recently enough for the controller to remember them), then ``sacct`` for older ones
where the cluster keeps accounting, then the job's log, where ``slurmstepd`` writes why it
killed the job (``CANCELLED``, ``DUE TO PREEMPTION``, ...). None of this imports submitit.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from triggerlab.files import read_json, write_json_atomic
from triggerlab.grid.failures import (
    CANCELLED,
    JOB_LOST,
    NODE_LOST,
    OUT_OF_MEMORY,
    PREEMPTED,
    TIME_LIMIT,
)

SLURM = "slurm"  # the grid's folder of job files, logs and records
JOBS = "jobs.json"
COMMANDS = ("sbatch", "squeue", "scancel")

QUEUED = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED", "STOPPED"}
)
RUNNING = frozenset(
    {"RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "POWER_UP_NODE"}
)
# Final states, and what each says about why a job left no result. A run's own failure
# always leaves one (``execute_run`` records it, submitit pickles any other exception), so a
# job that ended without a result was ended from outside, whatever its state says.
ENDED = {
    "COMPLETED": JOB_LOST,
    "FAILED": JOB_LOST,  # killed by a signal, or its node's processes died
    "CANCELLED": CANCELLED,
    "PREEMPTED": PREEMPTED,
    "NODE_FAIL": NODE_LOST,
    "BOOT_FAIL": NODE_LOST,
    "TIMEOUT": TIME_LIMIT,
    "DEADLINE": TIME_LIMIT,
    "OUT_OF_MEMORY": OUT_OF_MEMORY,
    "REVOKED": CANCELLED,
    "SPECIAL_EXIT": JOB_LOST,
}
# What slurmstepd writes into a job's error log when it kills the job, most specific first.
LOG_CAUSES = (
    ("DUE TO PREEMPTION", PREEMPTED),
    ("DUE TO TIME LIMIT", TIME_LIMIT),
    ("DUE TO NODE FAIL", NODE_LOST),
    ("oom-kill", OUT_OF_MEMORY),
    ("CANCELLED AT", CANCELLED),
)


def long_option(name: str, value: str | None = None) -> str:
    """A Slurm command's long option: two dashes, the name, and ``=value`` when given."""
    return f"--{name}" if value is None else f"--{name}={value}"


def slurm_folder(grid_dir: Path) -> Path:
    return grid_dir / SLURM


def read_jobs(grid_dir: Path) -> dict[str, dict[str, Any]]:
    """Run id -> ``{"job": id, "lost": [causes of retried attempts]}``; empty when none."""
    path = slurm_folder(grid_dir) / JOBS
    if not path.is_file():
        return {}
    try:
        runs = read_json(path).get("runs", {})
    except Exception:  # a damaged record only costs the attachment to running jobs
        return {}
    return {k: v for k, v in runs.items() if isinstance(v, dict) and isinstance(v.get("job"), str)}


def write_jobs(grid_dir: Path, jobs: dict[str, dict[str, Any]]) -> None:
    folder = slurm_folder(grid_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / JOBS, {"runs": jobs})


def slurm_reachable() -> bool:
    """Whether this machine has Slurm's commands (a login node, or a node of the cluster)."""
    return all(shutil.which(command) for command in COMMANDS)


def _lines(command: list[str]) -> list[str] | None:
    """The command's output lines; None when it failed (Slurm busy or unreachable)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.splitlines() if done.returncode == 0 else None


def _parse(lines: list[str]) -> dict[str, str]:
    """``id|STATE [by uid]`` lines as id -> STATE."""
    states = {}
    for line in lines:
        identity, _, state = line.partition("|")
        if identity and state:
            states[identity.strip()] = state.split()[0].rstrip("+")
    return states


def job_states(job_ids: list[str]) -> dict[str, str] | None:
    """The Slurm state of each job (``1234`` or ``1234_5``) that Slurm still knows about;
    None when Slurm could not be asked (a job missing then is not a job that ended)."""
    if not job_ids:
        return {}
    # one line per array task, finished ones too while the controller keeps them
    queue = _lines(["squeue", "-h", "-r", "-t", "all", long_option("me"), "-o", "%i|%T"])
    if queue is None:
        return None
    states = _parse(queue)
    missing = sorted({j.split("_")[0] for j in job_ids if j not in states})
    if missing and shutil.which("sacct"):  # older jobs, where the cluster keeps accounting
        command = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)]
        states = {**_parse(_lines(command) or []), **states}
    return {j: states[j] for j in job_ids if j in states}


def is_live(state: str | None) -> bool:
    return state in QUEUED or state in RUNNING


def log_path(grid_dir: Path, job_id: str) -> Path:
    """The job's error log as submitit names it (``<job>_<task>_log.err``)."""
    return slurm_folder(grid_dir) / f"{job_id}_0_log.err"


def log_tail(grid_dir: Path, job_id: str, lines: int = 5) -> str:
    try:
        text = log_path(grid_dir, job_id).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def ended_cause(grid_dir: Path, job_id: str, state: str | None) -> str:
    """Why a job ended without a result: from its final state when that says why, else from
    what slurmstepd wrote into its log."""
    cause = ENDED.get(state or "", JOB_LOST)
    if cause != JOB_LOST:
        return cause
    text = log_tail(grid_dir, job_id, lines=40)
    for mark, found in LOG_CAUSES:
        if mark in text:
            return found
    return JOB_LOST


def cancel(job_ids: list[str]) -> None:
    """``scancel`` jobs (errors ignored: a job that already ended cannot be cancelled)."""
    if job_ids:
        _lines(["scancel", *job_ids])
