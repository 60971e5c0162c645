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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from triggerlab.errors import ConfigError
from triggerlab.files import first_problem, write_json_atomic, write_text_atomic
from triggerlab.grid.plan import PlannedRun
from triggerlab.grid.spec import GridSpec
from triggerlab.rundir import RunDir

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


def manifest_of(spec: GridSpec, plan: list[PlannedRun]) -> dict[str, Any]:
    return {
        "name": spec.name,
        "varied": spec.varied_keys(),
        "repeats": spec.repeats,
        "clean_baseline": spec.clean_baseline,
        "runs": [run.manifest_entry() for run in plan],
    }


def write_manifest(grid_dir: Path, spec: GridSpec, plan: list[PlannedRun]) -> None:
    grid_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        grid_dir / SPEC_COPY, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    )
    write_json_atomic(grid_dir / MANIFEST, manifest_of(spec, plan))


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
