"""Grids on clusters: the options of `grid` that reach Slurm and Ray, what a grid prints when
it ends (failures by cause), and `status`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from triggerlab.cli.common import console, err_console, fail, listing
from triggerlab.errors import ArgumentError, TriggerlabError

if TYPE_CHECKING:
    from triggerlab.grid.runner import GridOutcome
    from triggerlab.grid.slurm_options import SlurmOptions

app = typer.Typer()

Retries = Annotated[
    int,
    typer.Option(
        help="Ray and Slurm: start a run lost with its node (or preempted, cancelled, out of "
        "time) again, at most this many times"
    ),
]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Slurm: wait for the jobs and collect them, or return once they are queued "
        "(`triggerlab status` follows them; rerunning the grid waits for them)",
    ),
]
Partition = Annotated[str | None, typer.Option(help="Slurm: the partition of the jobs")]
TimeLimit = Annotated[
    str,
    typer.Option(
        help="Slurm: each job's time limit: minutes (90), hours:minutes:seconds (2:00:00) or "
        "days-hours:minutes (1-12:00)"
    ),
]
Memory = Annotated[float | None, typer.Option(help="Slurm: memory per job, in GB")]
Gpus = Annotated[int, typer.Option(help="Slurm: GPUs per job")]
Parallel = Annotated[
    int | None, typer.Option(help="Slurm: at most this many jobs of the array run at once")
]
SbatchOption = Annotated[
    list[str] | None,
    typer.Option(help="Slurm: another sbatch option, NAME=VALUE, e.g. account=proj42 (repeat it)"),
]


def slurm_options(
    partition: str | None,
    time_limit: str,
    memory: float | None,
    gpus: int,
    parallel: int | None,
    extra: list[str] | None,
) -> SlurmOptions:
    from triggerlab.grid.slurm_options import SlurmOptions, parse_extra, parse_time

    return SlurmOptions(
        partition=partition,
        time_min=parse_time(time_limit),
        mem_gb=memory,
        gpus=gpus,
        parallel=parallel,
        extra=parse_extra(list(extra or [])),
    )


def with_ray_hint(exc: TriggerlabError) -> TriggerlabError:
    """An unreachable Ray cluster, with how to start one in the command line's terms."""
    if not isinstance(exc, ArgumentError) or exc.argument != "address":
        return exc
    return ArgumentError(
        "address",
        f"{exc.message} (`ray start --head` starts one; without --address, triggerlab starts "
        "Ray itself)",
    )


def print_outcome(grid_dir: Path, outcome: GridOutcome) -> None:
    """One line for the grid, one per failed run; exit status 1 when any run failed."""
    console.print(
        f"grid {grid_dir}: {outcome.total} runs, {outcome.skipped} already finished, "
        f"{len(outcome.completed)} run now, {len(outcome.failed)} failed ({outcome.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    for identity, error in outcome.failed.items():
        cause = outcome.causes.get(identity, "run error")
        err_console.print(f"failed {identity} ({cause}): {error}", highlight=False, markup=False)
    for note in outcome_notes(grid_dir, outcome):
        console.print(note, highlight=False, markup=False, soft_wrap=True)
    if not outcome.ok:
        raise typer.Exit(code=1)


def outcome_notes(grid_dir: Path, outcome: GridOutcome) -> list[str]:
    """Lines beyond the grid's one: failures counted by cause, runs that were retried, and
    what to do about runs left on Slurm."""
    from triggerlab.grid.failures import count_by_cause

    notes = []
    if outcome.causes:
        notes.append(f"failed by cause: {count_by_cause(outcome.causes)}")
    for identity, lost in outcome.retried.items():
        notes.append(f"retried {identity} after: {', '.join(lost)}")
    if outcome.submitted:
        notes.append(
            f"{len(outcome.submitted)} runs queued or running on Slurm: `triggerlab status "
            f"{grid_dir}` shows them; run this grid command again to wait for them and collect"
        )
    return notes


@app.command(epilog="Example:\n\n  triggerlab status grids/ref002_trigger_size")
def status(
    grid_dir: Annotated[Path, typer.Argument(help="a directory written by `triggerlab grid`")],
) -> None:
    """Say where each run of a grid stands: done, running, queued (Slurm), failed (and why),
    lost with its job, unfinished, or not started."""
    from triggerlab.grid.status import count_states, grid_status

    try:
        statuses = grid_status(grid_dir)
    except TriggerlabError as exc:
        raise fail(exc) from None
    table = Table("run", "state", "cell", "detail")
    rows = []
    for s in statuses:
        cell = ", ".join(f"{k}={v}" for k, v in s.cell.items()) or "(base)"
        if s.role == "baseline":
            cell += " (clean baseline)"
        cell += f", repeat {s.repeat}"
        table.add_row(s.run_id, s.state, escape(cell), escape(s.detail))
        rows.append((f"{s.run_id}  {s.state}", [cell] + ([s.detail] if s.detail else [])))
    listing(rows, table)
    console.print(count_states(statuses), highlight=False)
