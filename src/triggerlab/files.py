"""Writing files safely: a reader never sees half a file, a crash never leaves one."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from triggerlab.errors import ArgumentError, ConfigError, TriggerlabError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; run files get the mode any other
# file of the user would get.
FILE_MODE = 0o666 & ~_current_umask()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n")


def write_csv_atomic(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    """Parsed JSON; DataFormatError naming the file when it cannot be read or parsed."""
    from triggerlab.errors import DataFormatError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"{path}: unreadable ({exc})") from None


def first_problem(err: ValidationError) -> str:
    """``key: message`` of a validation error's first problem."""
    first = err.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or '(top level)'}: {first['msg']}"


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting for other processes
    that hold it: one builds or trains something, the others then read what it wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in blocks (datasets and weights are large)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Output folders: checked before any work starts, and left as they were when work is refused.
# A run or a grid creates its folder with every missing parent; when it is refused afterwards
# (a bad config found only once the data is loaded), the folders it created are removed again.

# Makes the error of a refused folder from what is wrong with it: the caller names its key.
Refusal = Callable[[str], TriggerlabError]


def config_key(key: str) -> Refusal:
    """Refusals naming a config key (``output.directory: ...``)."""
    return lambda message: ConfigError(f"{key}: {message}")


def argument(name: str) -> Refusal:
    """Refusals naming a library argument (``grid_dir: ...``), shown as its flag by the CLI."""
    return lambda message: ArgumentError(name, message)


def missing_folders(path: Path) -> list[Path]:
    """The folders that creating ``path`` with its parents would make, innermost first."""
    missing = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    return missing


def check_folder(path: Path, refuse: Refusal) -> None:
    """Refuse a ``path`` that cannot be a folder to write in: it is a file,
    or the nearest part of it that exists is a file or not writable."""
    missing = missing_folders(path)
    existing = missing[-1].parent if missing else path
    what = f"{path} is" if not missing else f"cannot create {path}: {existing} is"
    if not existing.is_dir():
        kind = "a file" if existing.exists() else "a broken link"
        raise refuse(f"{what} {kind}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise refuse(f"{what} not writable")


def remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) where empty: what a refused command created."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:  # removed with its contents already
            continue
        except OSError:  # not empty: something else writes there now
            return


@contextlib.contextmanager
def created_folder(path: Path, refuse: Refusal) -> Iterator[None]:
    """Create ``path`` with its parents; when the block is refused (TriggerlabError), remove
    the folders created here that are still empty. An OSError of creating is refused too."""
    missing = missing_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_if_empty(missing)
        raise refuse(f"cannot create {path} ({exc.strerror or exc})") from None
    try:
        yield
    except TriggerlabError:
        remove_if_empty(missing)
        raise
