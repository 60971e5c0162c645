"""The ``plan`` command: what a grid will cost, before any work; and the estimate the ``grid``
command prints at its start and compares with the measured time at its end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from triggerlab.cli.common import console, fail
from triggerlab.errors import ArgumentError, TriggerlabError

if TYPE_CHECKING:
    from triggerlab.grid.cost import GridCost
    from triggerlab.grid.spec import GridSpec
    from triggerlab.grid.stacking import Stack

app = typer.Typer()

Accelerator = Annotated[
    str,
    typer.Option(help="accelerator of the second estimate: H200, H100, A100, L40S, L4 or V100"),
]
Utilization = Annotated[
    float,
    typer.Option(help="share of the accelerator's bf16 peak the runs are assumed to reach"),
]


@app.command(
    epilog=(
        "Examples:\n\n"
        "  triggerlab plan configs/ref001_offline.yaml\n\n"
        "  triggerlab plan configs/defenses_digits.yaml --workers 2 --accelerator A100 "
        "--utilization 0.3 --json plan.json"
    )
)
def plan(
    spec: Annotated[Path, typer.Argument(help="grid spec YAML")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a spec key, e.g. base.train.epochs=5"),
    ] = None,
    workers: Annotated[int, typer.Option(help="local worker processes of the estimate")] = 1,
    threads_per_worker: Annotated[
        int | None,
        typer.Option("--threads-per-worker", help="torch threads per run (default: cores/workers)"),
    ] = None,
    accelerator: Accelerator = "H100",
    utilization: Utilization = 0.2,
    recalibrate: Annotated[
        bool, typer.Option(help="measure this machine again (else the saved calibration)")
    ] = False,
    max_runs: Annotated[
        int, typer.Option("--max-runs", help="refuse a spec of more runs than this", min=1)
    ] = 100_000,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the plan's figures to this file")
    ] = None,
    stack: Annotated[
        str,
        typer.Option(help="most runs of one shape trained together, as `grid --stack` (auto)"),
    ] = "auto",
) -> None:
    """Say what a grid will cost before any work: runs, trainings after sharing, the feature
    cache, FLOPs, and the wall time here and on an accelerator. Nothing runs; the machine's
    calibration is kept in the cache folder."""
    from triggerlab.grid.spec import load_grid_spec
    from triggerlab.grid.stacking import parse_stack

    try:
        loaded = load_grid_spec(spec, list(overrides or []))
        cost = estimate(
            loaded,
            None,
            max_runs,
            workers,
            threads_per_worker,
            accelerator=accelerator,
            utilization=utilization,
            recalibrate=recalibrate,
            stack=parse_stack(stack),
        )
        if json_out is not None:
            write_plan(json_out, cost)
    except TriggerlabError as exc:
        raise fail(exc) from None
    for line in cost.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if json_out is not None:
        console.print(f"wrote {json_out}", highlight=False, markup=False)


def write_plan(path: Path, cost: GridCost) -> None:
    import json

    from triggerlab.files import argument, check_folder, write_json_atomic

    if path.is_dir():
        raise ArgumentError("json", f"{path} is a folder; expected a file name")
    check_folder(path.parent, argument("json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, json.loads(json.dumps(cost.record())))


def estimate(
    spec: GridSpec,
    grid_dir: Path | None,
    max_runs: int,
    workers: int | None,
    threads: int | None,
    *,
    force: bool = False,
    accelerator: str = "H100",
    utilization: float = 0.2,
    recalibrate: bool = False,
    stack: Stack = "auto",
) -> GridCost:
    """The cost of the spec's runs; with ``grid_dir``, of those not finished there yet."""
    from triggerlab.grid.cost import check_accelerator, grid_cost, machine_calibration
    from triggerlab.grid.plan import plan_grid
    from triggerlab.grid.stacking import check_stack

    check_accelerator(accelerator, utilization)  # before the plan and the calibration
    check_stack(stack)
    workers = 1 if workers is None else workers
    if workers < 1:
        raise ArgumentError("workers", f"expected at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ArgumentError("threads", f"expected at least 1, got {threads}")
    runs = plan_grid(spec, max_runs)
    if grid_dir is not None and not force:
        from triggerlab.grid.store import run_of

        runs = [r for r in runs if not run_of(grid_dir, r.run_id).is_complete()]
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    calibration = machine_calibration(threads, recalibrate) if runs else None
    return grid_cost(
        runs,
        calibration=calibration,
        workers=workers,
        accelerator=accelerator,
        utilization=utilization,
        stack=stack,
    )
