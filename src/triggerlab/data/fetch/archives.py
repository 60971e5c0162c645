"""Unpacking an archive safely: every member is checked before anything is written.

A member may not be an absolute path, climb out with ``..``, hold a NUL byte in
its name, be a link, a device or a FIFO, be encrypted or compressed by a method
Python cannot read; an archive holding one is refused as a whole. (tarfile's
``data`` filter would also refuse most of these, but only as it goes, after
earlier members were written; zipfile has no such filter.)

What an archive may write is bounded by what its source says it unpacks to: the
sizes its members declare are added up before anything is written, and the bytes
actually written are counted against the same bound, so neither a zip bomb nor a
member declaring gigabytes fills the disk. A damaged archive (a bad CRC, a cut
compressed stream) is a DataFormatError naming it, never a traceback.
"""

from __future__ import annotations

import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from triggerlab.errors import DataFormatError

CHUNK = 1 << 20
READABLE = {  # the compression methods zipfile can read
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
ENCRYPTED = 0x1  # bit 0 of a zip member's general purpose flags

# What reading a damaged archive raises: a bad CRC or central directory, a compressed
# stream cut short or corrupt, a method that cannot be read.
DAMAGE = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
)


def _megabytes(count: int) -> str:
    return f"{count:,} bytes" if count < 1_000_000 else f"{count / 1e6:,.1f} MB"


@dataclass
class Budget:
    """The bytes an archive may unpack to (None: unbounded), and what it has used."""

    archive: Path
    limit: int | None
    declared: int = 0
    written: int = 0

    def declare(self, member: str, size: int) -> None:
        """Count a member's declared size; refused once the total passes the bound."""
        self.declared += size
        if self.limit is None or self.declared <= self.limit:
            return
        what = (
            f"member {member!r} declares {_megabytes(size)}"
            if size > self.limit
            else f"its members declare {_megabytes(self.declared)} by {member!r}"
        )
        raise DataFormatError(
            f"{self.archive.name}: {what}, more than the {_megabytes(self.limit)} this "
            "dataset's archive unpacks to; refused before anything was written (a damaged or "
            "malicious archive)"
        )

    def spend(self, member: str, count: int) -> None:
        """Count bytes about to be written; refused past the bound, whatever was declared."""
        self.written += count
        if self.limit is not None and self.written > self.limit:
            raise DataFormatError(
                f"{self.archive.name}: member {member!r} unpacks past the "
                f"{_megabytes(self.limit)} this dataset's archive unpacks to (more than it "
                "declares); refused"
            )


def _safe_name(name: str, strip: str, archive: Path) -> PurePosixPath | None:
    """The member's path inside the target, ``strip`` removed; None for the stripped folder."""
    if "\x00" in name:
        raise DataFormatError(f"{archive.name}: member {name!r} holds a NUL byte in its name")
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


# path (None: the stripped folder), is a folder, its name in the archive, opener
Entry = tuple[PurePosixPath | None, bool, str, Callable[[], IO[bytes]]]


def _write(target: Path, entries: list[Entry], budget: Budget) -> None:
    """Write the checked members: folders made, files copied; stripped folders skipped."""
    for path, is_dir, member, open_member in entries:
        if path is None:
            continue
        destination = target / path
        if is_dir:
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as source, open(destination, "wb") as out:
            while block := source.read(CHUNK):
                budget.spend(member, len(block))
                out.write(block)


def unpack(archive: Path, target: Path, strip: str = "", limit: int | None = None) -> None:
    """Extract ``archive`` (zip or tar, compressed or not) into ``target``, refusing it whole
    if any member is unsafe or the members declare more than ``limit`` bytes, and stopping
    (DataFormatError; what was written is the caller's to remove) when it proves damaged or
    writes more than that."""
    target.mkdir(parents=True, exist_ok=True)
    budget = Budget(archive, limit)
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, target, strip, budget)
        else:
            _unpack_tar(archive, target, strip, budget)
    except DAMAGE as exc:
        raise DataFormatError(f"{archive.name}: damaged or unreadable archive ({exc})") from None
    except OSError as exc:
        if exc.errno is not None:  # the disk, not the archive (a full disk, a folder's rights)
            raise
        # decompressors report a corrupt stream as an OSError without an errno
        raise DataFormatError(f"{archive.name}: damaged or unreadable archive ({exc})") from None


def _unpack_zip(archive: Path, target: Path, strip: str, budget: Budget) -> None:
    with zipfile.ZipFile(archive) as zipped:
        entries: list[Entry] = []
        for member in zipped.infolist():
            name = member.orig_filename  # zipfile cuts a name at a NUL byte; this one does not
            path = _safe_name(name, strip, archive)
            if (member.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link
                raise DataFormatError(f"{archive.name}: member {name!r} is a link")
            if member.flag_bits & ENCRYPTED:
                raise DataFormatError(
                    f"{archive.name}: member {name!r} is encrypted; an archive of a public "
                    "dataset is not"
                )
            if member.compress_type not in READABLE:
                raise DataFormatError(
                    f"{archive.name}: member {name!r} is compressed by method "
                    f"{member.compress_type}, which cannot be read (expected "
                    f"{', '.join(READABLE.values())})"
                )
            budget.declare(name, member.file_size)
            entries.append((path, member.is_dir(), name, partial(zipped.open, member)))
        _write(target, entries, budget)


def _unpack_tar(archive: Path, target: Path, strip: str, budget: Budget) -> None:
    try:
        tar = tarfile.open(archive)  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as exc:
        raise DataFormatError(f"{archive.name}: not a zip or tar archive ({exc})") from None
    with tar:
        entries: list[Entry] = []
        # Headers are read one at a time: a member declaring too much is refused before the
        # reader seeks past (decompresses) its data.
        for member in tar:
            if not (member.isfile() or member.isdir()):
                raise DataFormatError(
                    f"{archive.name}: member {member.name!r} is a link or a special file"
                )
            path = _safe_name(member.name, strip, archive)
            budget.declare(member.name, member.size if member.isfile() else 0)
            entries.append((path, member.isdir(), member.name, partial(_tar_member, tar, member)))
        _write(target, entries, budget)


def _tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    source = tar.extractfile(member)
    assert source is not None, "only regular files are opened"
    return source
