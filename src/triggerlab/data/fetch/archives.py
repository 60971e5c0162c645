"""Unpacking an archive safely: every member is checked before anything is written.

A member may not be an absolute path, climb out with ``..``, be a link, a
device or a FIFO; an archive holding one is refused as a whole. (tarfile's
``data`` filter would also refuse most of these, but only as it goes, after
earlier members were written; zipfile has no such filter.)
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from triggerlab.errors import DataFormatError


def _safe_name(name: str, strip: str, archive: Path) -> PurePosixPath | None:
    """The member's path inside the target, ``strip`` removed; None for the stripped folder."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or "\\" in name:
        raise DataFormatError(
            f"{archive.name}: member {name!r} would be written outside its folder"
        )
    text = str(path)
    if strip and (text + "/").startswith(strip):
        text = text[len(strip) :]
        if not text:
            return None
    return PurePosixPath(text)


Entry = tuple[PurePosixPath | None, bool, Callable[[], IO[bytes]]]  # path, is a folder, opener


def _write(target: Path, entries: list[Entry]) -> None:
    """Write the checked members: folders made, files copied; stripped folders skipped."""
    for name, is_dir, open_member in entries:
        if name is None:
            continue
        destination = target / name
        if is_dir:
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as source, open(destination, "wb") as out:
            shutil.copyfileobj(source, out)


def unpack(archive: Path, target: Path, strip: str = "") -> None:
    """Extract ``archive`` (zip or tar, compressed or not) into ``target``, refusing it whole
    if any member is unsafe."""
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                if (member.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link
                    raise DataFormatError(f"{archive.name}: member {member.filename!r} is a link")
            entries: list[Entry] = [
                (_safe_name(m.filename, strip, archive), m.is_dir(), partial(zipped.open, m))
                for m in zipped.infolist()
            ]
            _write(target, entries)
        return
    try:
        tar = tarfile.open(archive)  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as exc:
        raise DataFormatError(f"{archive.name}: not a zip or tar archive ({exc})") from None
    with tar:
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()):
                raise DataFormatError(
                    f"{archive.name}: member {member.name!r} is a link or a special file"
                )
        entries = [
            (_safe_name(m.name, strip, archive), m.isdir(), partial(_tar_member, tar, m))
            for m in tar.getmembers()
        ]
        _write(target, entries)


def _tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    source = tar.extractfile(member)
    assert source is not None, "only regular files are opened"
    return source
