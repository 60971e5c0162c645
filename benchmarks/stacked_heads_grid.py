"""A frozen-backbone grid run twice back to back: every run alone (``--stack 1``), then as the
grid runs by default (``--stack auto``: the heads of runs that share a stack key train as one
stack of heads). Reports each grid's wall time and its training time:

  * alone: the sum of the runs' ``timings.train_s`` (each run's epochs and evaluations);
  * stacked: the sum, over the stacks, of the stack's ``stack.train_s`` (once per stack: its
    members' epochs and evaluations), plus ``timings.train_s`` of any run that trained alone;

and, of that, the epochs' own time (``timings.epochs_s``, the optimiser steps without the
evaluation after each epoch; a stack's members share theirs, counted once).

    python benchmarks/stacked_heads_grid.py configs/ref001_offline.yaml \\
        --set 'grid.trigger.position=[bottom_right]' --set 'grid.trigger.color=[white]' \\
        --set repeats=1 --json benchmarks/results/stacked_heads_grid.json

The feature cache is filled first, by one run of the spec's base, so neither grid pays for
it. Both grids write under ``--out`` (a temporary folder by default), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from triggerlab.config import validate_config
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec
from triggerlab.run.experiment import run_experiment


def training_s(grid: Path) -> tuple[float, float, int]:
    """The grid's training seconds and its epochs' seconds, each stack counted once; and the
    runs that stacked."""
    total, epochs, stacked, seen = 0.0, 0.0, 0, set()
    for run in sorted((grid / "runs").iterdir()):
        summary = json.loads((run / "summary.json").read_text())
        stack = summary.get("stack")
        if stack is None:
            total += summary["timings"]["train_s"]
            epochs += summary["timings"]["epochs_s"]
            continue
        stacked += 1
        key = (stack["members"], stack["train_s"])  # the members of a stack share its record
        if key not in seen:
            seen.add(key)
            total += stack["train_s"]
            epochs += summary["timings"]["epochs_s"]
    return total, epochs, stacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    spec = load_grid_spec(args.spec, args.overrides)
    out = args.out or Path(tempfile.mkdtemp(prefix="stacked_heads_grid_"))
    start = time.perf_counter()
    base = validate_config({**spec.base, "output": {"directory": str(out), "name": "warm"}})
    run_experiment(base)  # fills the feature cache
    warm_s = time.perf_counter() - start
    figures: dict[str, Any] = {"machine": platform.processor() or platform.machine()}
    figures.update(cores=os.cpu_count(), load_before=os.getloadavg(), warm_up_s=warm_s)
    for name, stack in (("alone", 1), ("auto", "auto")):
        outcome = run_grid(spec, out / name, threads=args.threads, stack=stack)  # type: ignore[arg-type]
        assert outcome.ok, outcome.failed
        train, epochs, stacked = training_s(out / name)
        figures[name] = {
            "runs": len(outcome.completed),
            "stacked_runs": stacked,
            "grid_wall_s": outcome.seconds,
            "training_s": train,
            "epochs_s": epochs,
        }
        print(
            f"--stack {stack}: {len(outcome.completed)} runs ({stacked} stacked), grid "
            f"{outcome.seconds:.1f} s, training {train:.2f} s (epochs {epochs:.2f} s)"
        )
    ratio = figures["alone"]["training_s"] / figures["auto"]["training_s"]
    figures["training_speedup"] = ratio
    figures["epochs_speedup"] = figures["alone"]["epochs_s"] / figures["auto"]["epochs_s"]
    figures["load_after"] = os.getloadavg()
    print(f"training: {ratio:.1f}x, epochs: {figures['epochs_speedup']:.1f}x faster stacked")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
