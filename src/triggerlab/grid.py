"""Systematic studies: a grid of experiments declared in YAML, run once each, resumable.

A grid spec names a ``base`` experiment, the dotted keys to vary (``grid``: a
cartesian product; ``zip``: groups varied together), ``repeats`` with seeds
derived from ``seed``, and optionally a rate-0 ``clean_baseline`` for every
cell. Each run's id is a hash of its resolved config (``output`` and
``data.root`` excluded), so the same experiment always lands in the same
``<grid_dir>/runs/<id>/`` and a rerun skips what is finished.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import fcntl
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from triggerlab.config import (
    ExperimentConfig,
    format_validation_error,
    parse_override,
    read_yaml,
    section_keys,
    set_dotted,
    validate_config,
)
from triggerlab.errors import ConfigError, TriggerlabError
from triggerlab.runio import write_json_atomic, write_text_atomic

MANIFEST = "manifest.json"
SPEC_COPY = "grid.yaml"
RUNS = "runs"
FAILED = "failed.json"
ID_LENGTH = 12


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="grid name (default: the spec file's name)")
    base: dict[str, Any] = Field(
        default_factory=dict, description="the experiment every run starts from"
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="dotted key -> values (product)"
    )
    zip: list[dict[str, list[Any]]] = Field(
        default_factory=list, description="groups of keys whose values vary together"
    )
    repeats: int = Field(1, ge=1, description="runs per cell, each with its own derived seed")
    seed: int = Field(0, ge=0, description="base seed the repeat seeds are derived from")
    clean_baseline: bool = Field(
        False, description="add a rate-0 run per cell for the clean accuracy drop"
    )

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has an empty list of values")
        return grid

    @model_validator(mode="after")
    def _consistent(self) -> GridSpec:
        seen = set(self.grid)
        for number, group in enumerate(self.zip):
            lengths = {key: len(values) for key, values in group.items()}
            if not group or min(lengths.values()) == 0:
                raise ValueError(f"zip group {number} is empty or has an empty list of values")
            if len(set(lengths.values())) > 1:
                raise ValueError(f"zip group {number}: lists must have one length, got {lengths}")
            repeated = seen & set(group)
            if repeated:
                raise ValueError(f"zip group {number} repeats varied key(s) {sorted(repeated)}")
            seen |= set(group)
        if "train.seed" in seen:
            raise ValueError("vary seeds with repeats and seed, not with train.seed")
        return self

    def varied_keys(self) -> list[str]:
        return [*self.grid, *(key for group in self.zip for key in group)]

    def cells(self) -> Iterator[dict[str, Any]]:
        """Every combination of varied values, in spec order."""
        axes: list[list[dict[str, Any]]] = [
            [{key: v} for v in values] for key, values in self.grid.items()
        ]
        for group in self.zip:
            length = len(next(iter(group.values())))
            axes.append([{key: values[i] for key, values in group.items()} for i in range(length)])
        for combination in itertools.product(*axes):
            cell: dict[str, Any] = {}
            for part in combination:
                cell.update(part)
            yield cell


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    cell: dict[str, Any]
    repeat: int
    seed: int
    role: Literal["grid", "baseline"]
    baseline_id: str | None
    config: ExperimentConfig = field(repr=False)

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "cell": self.cell,
            "repeat": self.repeat,
            "seed": self.seed,
            "role": self.role,
            "baseline_id": self.baseline_id,
        }


def run_id(cfg: ExperimentConfig) -> str:
    """Short hash of the resolved config without paths: the same experiment, the same id."""
    data = cfg.model_dump(mode="json")
    data.pop("output")
    data["data"].pop("root")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    return [
        int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(repeats)
    ]


def _apply_cell(base: dict[str, Any], cell: dict[str, Any], seed: int) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    # Kind keys first: changing a section's kind starts it afresh, then its parameters fill it.
    for key in sorted(cell, key=lambda k: not k.endswith(".kind")):
        set_dotted(raw, key.split("."), cell[key], f"grid key {key}")
    set_dotted(raw, ["train", "seed"], seed, "repeat seed")
    return raw


def cell_label(cell: dict[str, Any]) -> str:
    return "cell " + (", ".join(f"{k}={v!r}" for k, v in cell.items()) or "(the base experiment)")


def _validate_cell(raw: dict[str, Any], cell: dict[str, Any]) -> ExperimentConfig:
    return validate_config(raw, f"in {cell_label(cell)}")


def preflight(plan: list[PlannedRun]) -> None:
    """Check what depends on the data before any run: each dataset is loaded once.

    Triggers must fit the images, targets must be classes and models must take
    the input size; the first problem is reported with its cell.
    """
    from triggerlab.data import DataSplit, prepare_data
    from triggerlab.models import build_model
    from triggerlab.tasks import setup_task
    from triggerlab.train import resolve_device

    datasets: dict[str, DataSplit] = {}
    models: set[str] = set()
    for run in plan:
        cfg = run.config
        try:
            resolve_device(cfg.train.device)
            data_key = cfg.data.model_dump_json(exclude={"seed"})
            if data_key not in datasets:
                datasets[data_key] = prepare_data(cfg.data, cfg.split_seed)
            data = datasets[data_key]
            cfg.trigger.build(data.shape)
            outputs = setup_task(cfg, data)[0].num_outputs
            model_key = json.dumps([cfg.model.model_dump(mode="json"), data.shape, outputs])
            if model_key not in models:
                channels, height, width = data.shape
                build_model(cfg.model.name, channels, (height, width), outputs, cfg.model.options)
                models.add(model_key)
        except TriggerlabError as exc:
            raise type(exc)(f"in {cell_label(run.cell)}: {exc}") from None


def plan_grid(spec: GridSpec) -> list[PlannedRun]:
    """Expand the spec into runs; every cell is validated before anything runs."""
    plan: dict[str, PlannedRun] = {}
    for repeat, seed in enumerate(repeat_seeds(spec.seed, spec.repeats)):
        for cell in spec.cells():
            cfg = _validate_cell(_apply_cell(spec.base, cell, seed), cell)
            identity = run_id(cfg)
            baseline_id = None
            if spec.clean_baseline:
                clean_cell = {**cell, "poison.rate": 0.0, "poison.count": None}
                clean = _validate_cell(_apply_cell(spec.base, clean_cell, seed), clean_cell)
                baseline_id = run_id(clean)
                if baseline_id not in plan and baseline_id != identity:
                    shown = {k: v for k, v in clean_cell.items() if k in cell}
                    plan[baseline_id] = PlannedRun(
                        baseline_id, shown, repeat, seed, "baseline", baseline_id, clean
                    )
            existing = plan.get(identity)
            if existing is None or existing.role == "baseline":
                plan[identity] = PlannedRun(identity, cell, repeat, seed, "grid", baseline_id, cfg)
    return list(plan.values())


def load_grid_spec(path: Path, overrides: list[str] | None = None) -> GridSpec:
    """Read a grid spec; a ``base`` given as a path is read relative to the spec file."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid grid spec {path}: expected a mapping, got {type(raw).__name__}")
    if isinstance(raw.get("base"), str):
        base_path = (path.parent / raw["base"]).resolve()
        base = read_yaml(base_path)
        if not isinstance(base, dict):
            raise ConfigError(f"invalid base config {base_path}: expected a mapping")
        raw["base"] = base
    for item in overrides or []:
        parts, value = parse_override(item)
        set_dotted(raw, parts, value, f"--set {item!r}")
    raw.setdefault("name", path.stem)
    try:
        spec = GridSpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"grid spec {path}")) from None
    _check_keys(spec)
    return spec


def _check_keys(spec: GridSpec) -> None:
    """Every varied key must exist in the experiment schema: checked on the base alone."""
    for key in spec.varied_keys():
        parts = key.split(".")
        allowed = (
            section_keys(tuple(parts[:-1]))
            if len(parts) > 1
            else list(ExperimentConfig.model_fields)
        )
        if parts[-1] not in allowed and not _under_free_mapping(parts):
            raise ConfigError(
                f"grid key {key!r} is not an experiment setting"
                + (
                    f"; {'.'.join(parts[:-1]) or 'top level'} has {', '.join(allowed)}"
                    if allowed
                    else ""
                )
            )


def _under_free_mapping(parts: list[str]) -> bool:
    """Keys inside ``data.options``/``model.options`` and trigger sub-specs are checked per cell."""
    return (len(parts) > 2 and parts[1] == "options") or parts[0] == "trigger"


# ---- on disk --------------------------------------------------------------------------------


def run_dir(grid_dir: Path, identity: str) -> Path:
    return grid_dir / RUNS / identity


def is_complete(path: Path) -> bool:
    """A run is done when its summary.json parses and says so (it is written last, atomically)."""
    try:
        return json.loads((path / "summary.json").read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def read_manifest(grid_dir: Path) -> dict[str, Any]:
    path = grid_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{grid_dir} is not a grid directory: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or "runs" not in manifest:
        raise ConfigError(f"{path}: not a triggerlab grid manifest")
    return manifest


def write_manifest(grid_dir: Path, spec: GridSpec, plan: list[PlannedRun]) -> None:
    grid_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        grid_dir / SPEC_COPY, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    )
    manifest = {
        "name": spec.name,
        "varied": spec.varied_keys(),
        "repeats": spec.repeats,
        "clean_baseline": spec.clean_baseline,
        "runs": [run.manifest_entry() for run in plan],
    }
    write_json_atomic(grid_dir / MANIFEST, manifest)


@contextlib.contextmanager
def grid_lock(grid_dir: Path) -> Iterator[None]:
    """One process per grid directory; the lock dies with its process, even on SIGKILL."""
    grid_dir.mkdir(parents=True, exist_ok=True)
    with (grid_dir / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{grid_dir} is being run by another triggerlab process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- executing one run (in this process, a worker process or a Ray task) ----------------------


def execute_run(
    config: dict[str, Any], directory: str, threads: int | None = None
) -> dict[str, Any]:
    """Run one experiment into ``directory`` from scratch; failures are recorded, not raised."""
    import torch

    from triggerlab.experiment import run_experiment

    if threads:
        torch.set_num_threads(threads)
    path = Path(directory)
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    try:
        cfg = ExperimentConfig.model_validate(config)
        result = run_experiment(cfg, run_dir=path, progress=False)
    except Exception as exc:  # a failed run must not stop the grid: record it and go on
        path.mkdir(parents=True, exist_ok=True)
        error = {
            "error": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        }
        write_json_atomic(path / FAILED, error)
        return {"ok": False, "seconds": time.perf_counter() - start, **error}
    return {"ok": True, "seconds": time.perf_counter() - start, "final": result.summary["final"]}


def _die_with_parent(threads: int | None) -> None:
    """Worker initialiser: ask Linux to kill this worker when the grid process dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if threads:
        import torch

        torch.set_num_threads(threads)


@dataclass
class GridOutcome:
    total: int
    skipped: int
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


Report = Callable[[PlannedRun, dict[str, Any]], None]


def _run_local(
    todo: list[PlannedRun], grid_dir: Path, workers: int, threads: int | None, report: Report
) -> None:
    if workers == 1:
        for run in todo:
            report(
                run,
                execute_run(
                    run.config.model_dump(mode="json"), str(run_dir(grid_dir, run.run_id)), threads
                ),
            )
        return
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_die_with_parent, initargs=(threads,)
    ) as pool:
        pending: dict[Future[dict[str, Any]], PlannedRun] = {
            pool.submit(
                execute_run, r.config.model_dump(mode="json"), str(run_dir(grid_dir, r.run_id))
            ): r
            for r in todo
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                run = pending.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool as exc:
                    outcome = {"ok": False, "error": "BrokenProcessPool", "message": str(exc)}
                report(run, outcome)


def _run_ray(
    todo: list[PlannedRun], grid_dir: Path, threads: int | None, address: str | None, report: Report
) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'triggerlab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    task = ray.remote(execute_run)
    try:
        pending = {}
        for run in todo:
            gpus = 1 if run.config.train.device == "cuda" else 0
            options = task.options(num_cpus=threads or 1, num_gpus=gpus, max_retries=0)
            ref = options.remote(
                run.config.model_dump(mode="json"), str(run_dir(grid_dir, run.run_id)), threads
            )
            pending[ref] = run
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as exc:  # the task itself died (node lost, out of memory)
                outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
            report(run, outcome)
    finally:
        if started_here:
            ray.shutdown()


def run_grid(
    spec: GridSpec,
    grid_dir: Path,
    workers: int = 1,
    threads: int | None = None,
    executor: Literal["local", "ray"] = "local",
    address: str | None = None,
    force: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> GridOutcome:
    """Plan, then run every run that is not complete yet; return what happened."""
    if workers < 1:
        raise ConfigError(f"--workers: expected at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads-per-worker: expected at least 1, got {threads}")
    plan = plan_grid(spec)
    preflight(plan)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    start = time.perf_counter()
    with grid_lock(grid_dir):
        write_manifest(grid_dir, spec, plan)
        todo = [r for r in plan if force or not is_complete(run_dir(grid_dir, r.run_id))]
        outcome = GridOutcome(total=len(plan), skipped=len(plan) - len(todo))
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            disable=not progress,
        )

        def report(run: PlannedRun, result: dict[str, Any]) -> None:
            if result["ok"]:
                outcome.completed.append(run.run_id)
                shown = [k for k in result["final"] if k != "train_loss"][
                    :2
                ]  # the task's first metrics
                status = " ".join(f"{k} {result['final'][k]:.3f}" for k in shown)
            else:
                outcome.failed[run.run_id] = f"{result['error']}: {result['message']}"
                status = f"FAILED {result['error']}"
            bar.update(bar_task, advance=1, status=f"last: {run.run_id} {status}")
            if echo is not None:
                done = len(outcome.completed) + len(outcome.failed)
                cell = ", ".join(f"{k}={v}" for k, v in run.cell.items())
                where = f"{run.role}, repeat {run.repeat}; {cell}"
                echo(f"[{done}/{len(todo)}] {run.run_id} ({where}) {status}")

        with bar:
            bar_task = bar.add_task(spec.name or "grid", total=len(todo), status="")
            if executor == "ray":
                _run_ray(todo, grid_dir, threads, address, report)
            else:
                _run_local(todo, grid_dir, workers, threads, report)
    outcome.seconds = time.perf_counter() - start
    return outcome
