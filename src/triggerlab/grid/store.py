"""A grid directory on disk: the spec copy, the manifest of every run, the runs, and a lock.

```
<grid_dir>/grid.yaml        the spec as validated
<grid_dir>/manifest.json    every planned run: id, cell, repeat, seed, role, baseline
<grid_dir>/runs/<id>/       one run directory each (see rundir.py)
<grid_dir>/.lock            held by the process running the grid
```
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from triggerlab.config.yaml_input import read_yaml
from triggerlab.errors import ArgumentError, ConfigError
from triggerlab.files import first_problem, write_json_atomic, write_text_atomic
from triggerlab.grid.plan import PlannedRun
from triggerlab.grid.spec import GridSpec
from triggerlab.run.rundir import RunDir

MANIFEST = "manifest.json"
SPEC_COPY = "grid.yaml"
RUNS = "runs"


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    cell: dict[str, Any]
    repeat: int
    seed: int
    role: Literal["grid", "baseline"]
    baseline_id: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    varied: list[str] = []
    repeats: int = 1
    clean_baseline: bool = False
    runs: list[ManifestEntry]


def run_dir(grid_dir: Path, identity: str) -> Path:
    return grid_dir / RUNS / identity


def run_of(grid_dir: Path, identity: str) -> RunDir:
    return RunDir(run_dir(grid_dir, identity))


def read_manifest(grid_dir: Path) -> dict[str, Any]:
    """The manifest as a plain mapping, its shape checked."""
    path = grid_dir / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{grid_dir} is not a grid directory: no {MANIFEST}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable manifest ({exc})") from None
    try:
        return Manifest.model_validate(raw).model_dump()
    except ValidationError as err:
        raise ConfigError(
            f"{path}: not a triggerlab grid manifest ({first_problem(err)})"
        ) from None


def read_spec_copy(grid_dir: Path) -> GridSpec:
    """The spec a grid directory was run with (``grid.yaml``), validated."""
    path = grid_dir / SPEC_COPY
    raw = read_yaml(path)
    try:
        return GridSpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: not a triggerlab grid spec ({first_problem(err)})") from None


def manifest_of(
    spec: GridSpec, plan: list[PlannedRun], kept: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The manifest of ``plan``; ``kept`` entries of an earlier spec stay listed after it."""
    kept = kept or []
    varied = list(dict.fromkeys([*spec.varied_keys(), *(k for e in kept for k in e["cell"])]))
    return {
        "name": spec.name,
        "varied": varied,
        "repeats": spec.repeats,
        "clean_baseline": spec.clean_baseline,
        "runs": [run.manifest_entry() for run in plan] + kept,
    }


def write_manifest(
    grid_dir: Path,
    spec: GridSpec,
    plan: list[PlannedRun],
    kept: list[dict[str, Any]] | None = None,
) -> None:
    grid_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        grid_dir / SPEC_COPY, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    )
    write_json_atomic(grid_dir / MANIFEST, manifest_of(spec, plan, kept))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {
            k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()
        }
    return {prefix.rstrip("."): value}


def spec_difference(old: GridSpec, new: GridSpec, shown: int = 4) -> str:
    """``key: old -> new`` for the settings two specs disagree on (the first few)."""
    a, b = _flat(old.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    parts = [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}" for k in keys[:shown]]
    return "; ".join(parts) + (f"; and {len(keys) - shown} more" if len(keys) > shown else "")


Existing = Literal["refuse", "extend", "replace"]


def earlier_runs(
    grid_dir: Path, spec: GridSpec, plan: list[PlannedRun], existing: Existing
) -> list[dict[str, Any]]:
    """What to do with a grid folder that already holds a different spec's runs.

    ``refuse``: an error showing the difference; ``extend``: keep its runs (returned,
    to stay in the manifest) beside this spec's; ``replace``: delete the run folders
    this spec does not plan. A folder of the same spec simply resumes.
    """
    if not (grid_dir / MANIFEST).exists():
        return []
    old = read_spec_copy(grid_dir)
    if old.model_dump(mode="json") == spec.model_dump(mode="json"):
        return []
    if existing == "refuse":
        raise ArgumentError(
            "existing",
            f"{grid_dir} holds the runs of another grid spec ({spec_difference(old, spec)}); "
            "choose another folder, keep its runs beside this spec's (extend), or remove "
            "the runs this spec does not plan (replace)",
        )
    planned = {run.run_id for run in plan}
    entries = [e for e in read_manifest(grid_dir)["runs"] if e["id"] not in planned]
    if existing == "extend":
        return entries
    for entry in entries:
        shutil.rmtree(run_dir(grid_dir, entry["id"]), ignore_errors=True)
    return []


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
