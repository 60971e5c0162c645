"""What the jobs of a Slurm grid ask for, read from the command line and checked: first
against their own bounds, then by Slurm itself (``sbatch``'s test mode, which submits
nothing), before anything is written."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from dataclasses import dataclass, field

from triggerlab.errors import ArgumentError
from triggerlab.grid.slurm_queue import long_option, slurm_reachable

MAX_TIME_MIN = 365 * 24 * 60


@dataclass(frozen=True)
class SlurmOptions:
    """What each job of the array asks Slurm for; ``extra`` holds other sbatch options by
    their long name (``account``, ``qos``, ``constraint``, ...); ``poll_s`` is how often the
    waiting command asks Slurm about its jobs."""

    partition: str | None = None
    time_min: int = 60
    mem_gb: float | None = None
    gpus: int = 0
    parallel: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    poll_s: float = 30.0


def parse_time(text: str) -> int:
    """Minutes from ``90``, ``1:30:00``, ``2-00:00`` or ``2-00:00:00`` (Slurm's forms)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match is None:
        raise ArgumentError(
            "slurm_time", "expected minutes (90) or [days-]hours:minutes[:seconds]", repr(text)
        )
    days, first, second, third = match.groups()
    if days is None and second is None:  # plain minutes
        minutes = int(first)
    else:
        hours, mins, secs = int(first), int(second or 0), int(third or 0)
        minutes = int(days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)
    if not 1 <= minutes <= MAX_TIME_MIN:
        raise ArgumentError("slurm_time", "expected between 1 minute and 365 days", repr(text))
    return minutes


def parse_extra(items: list[str]) -> dict[str, str]:
    """``account=proj42`` items as sbatch options; a key must be a long option's name."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9-]*", key) or not value.strip():
            raise ArgumentError(
                "slurm_option",
                "expected NAME=VALUE of a long sbatch option, e.g. account=proj42",
                repr(item),
            )
        extra[key] = value.strip()
    return extra


def check_options(options: SlurmOptions) -> None:
    """The options' own bounds, before Slurm is asked anything."""
    if not 1 <= options.time_min <= MAX_TIME_MIN:
        raise ArgumentError("slurm_time", f"expected 1 to {MAX_TIME_MIN} minutes")
    if options.mem_gb is not None and not 0 < options.mem_gb <= 1 << 20:
        raise ArgumentError("slurm_mem", f"expected a positive number of GB, got {options.mem_gb}")
    if not 0 <= options.gpus <= 64:
        raise ArgumentError("slurm_gpus", f"expected 0 to 64 GPUs per run, got {options.gpus}")
    if options.parallel is not None and options.parallel < 1:
        raise ArgumentError("slurm_parallel", f"expected at least 1, got {options.parallel}")
    if not options.poll_s > 0:
        raise ArgumentError("slurm_poll", f"expected seconds above 0, got {options.poll_s}")


def check_slurm() -> None:
    """submitit importable and Slurm's commands on the PATH, or one message saying which."""
    if importlib.util.find_spec("submitit") is None:
        raise ArgumentError("executor", "'slurm' needs submitit: pip install 'triggerlab[slurm]'")
    if not slurm_reachable():
        raise ArgumentError(
            "executor",
            "'slurm' needs Slurm's sbatch, squeue and scancel on the PATH: run it on the "
            "cluster's login node",
        )


def request(options: SlurmOptions, threads: int) -> dict[str, str]:
    """What one job asks for, as sbatch's long options (name -> value)."""
    asked = {"time": str(options.time_min), "cpus-per-task": str(threads)}
    if options.partition:
        asked["partition"] = options.partition
    if options.mem_gb is not None:
        asked["mem"] = f"{round(options.mem_gb * 1024)}M"
    if options.gpus:
        asked["gpus-per-node"] = str(options.gpus)
    return {**asked, **options.extra}


def check_request(options: SlurmOptions, threads: int) -> None:
    """Ask Slurm whether it would accept one job of the array (sbatch's test mode, which
    submits nothing): a partition, time, memory or GPU request it refuses stops the grid
    before anything is written."""
    flags = [long_option(name, value) for name, value in request(options, threads).items()]
    command = ["sbatch", long_option("test-only"), *flags, long_option("wrap", "true")]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ArgumentError("executor", f"cannot ask Slurm about the jobs ({exc})") from None
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[:300]
        raise ArgumentError("executor", f"Slurm refuses the jobs' request: {said}")
