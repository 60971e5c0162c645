"""Runs on nodes that do not share the grid folder: run locally, then ship the run folder back.

A Ray task writes where it runs. When the grid folder is on storage every node
shares, each run writes its folder in place. A node that does not see the grid
folder (its disk is its own) would write a run the driver never finds, while the
driver's manifest calls it done. So the driver marks the folder with a token for
this session (``.session``), and a task that does not find the token where the
grid should be runs into a staging folder on its node, packs the run folder (the
model, CSVs, JSON and figures: small) and returns it with its outcome; the driver
unpacks it into the grid, replacing any earlier attempt at once.
"""

from __future__ import annotations

import io
import secrets
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from triggerlab.files import write_text_atomic
from triggerlab.grid.execute import execute_run
from triggerlab.grid.store import run_dir
from triggerlab.run.shared_training import TRAINED

SESSION = ".session"
SHIPPED = "shipped"  # the outcome's key holding the packed run folder


def mark_session(grid_dir: Path) -> str:
    """A fresh token written into the grid folder: a node that reads it back shares the folder."""
    token = secrets.token_hex(8)
    write_text_atomic(grid_dir / SESSION, token)
    return token


def sees_grid(grid_dir: Path, token: str) -> bool:
    """Whether this node sees the driver's grid folder (and not a stale copy at the same path)."""
    try:
        return (grid_dir / SESSION).read_text(encoding="utf-8") == token
    except OSError:
        return False


def staging_folder(token: str) -> Path:
    """Where a node that does not share the grid folder keeps this session's runs."""
    return Path(tempfile.gettempdir()) / "triggerlab-grid" / token


def pack(folder: Path) -> bytes:
    """The folder's files as an uncompressed tar (weights barely compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, arcname=".")
    return buffer.getvalue()


def unpack(grid_dir: Path, identity: str, data: bytes) -> None:
    """Put a shipped run folder in place: extracted beside it, then swapped in, so a crash
    leaves either the earlier folder or none (the run is then redone), never a mixture."""
    target = run_dir(grid_dir, identity)
    incoming = target.with_name(f".{identity}.incoming")
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        archive.extractall(incoming, filter="data")  # no links or paths leaving the folder
    shutil.rmtree(target, ignore_errors=True)
    incoming.rename(target)


def execute_on_node(
    arguments: tuple[Any, ...], grid: str, identity: str, token: str
) -> dict[str, Any]:
    """``execute_run`` on whatever node Ray chose: in place when the node shares the grid
    folder, else in a staging folder on the node, whose contents come back with the outcome."""
    grid_dir = Path(grid)
    if sees_grid(grid_dir, token):
        return execute_run(*arguments)
    config, _, threads, trained = arguments
    staging = staging_folder(token)
    folder = staging / "runs" / identity
    if trained is not None:  # trainings are shared among the runs of this node only
        trained = (str(staging / TRAINED), trained[1])
    result = execute_run(config, str(folder), threads, trained)
    if folder.is_dir():
        result[SHIPPED] = pack(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return result


def clear_staging(token: str) -> None:
    """Remove this session's staging folder on the node that runs it."""
    shutil.rmtree(staging_folder(token), ignore_errors=True)
