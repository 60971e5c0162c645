"""One run of a grid, as every executor runs it: the arguments it travels with, and
``execute_run``, which continues a killed run from its checkpoint and records a failure
instead of raising it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from triggerlab.config import ExperimentConfig
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
