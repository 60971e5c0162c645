"""Getting datasets: ``triggerlab data fetch``, ``data.download: true`` and ``data check``.

A fetch downloads each file into ``<root>/.triggerlab-fetch/`` (``.part`` while
it arrives, resumed by a Range request after an interruption, never longer than
the file is known to be), verifies its pinned MD5 before anything is unpacked,
unpacks into a fresh folder beside the root's contents (never more than the
archive is known to hold), checks that folder holds a complete copy and only
then renames the unpacked entries into place: an interrupted or refused fetch
never leaves a copy that looks complete, nor part of one.

A mirror (``mirror=`` / ``--mirror`` / ``TRIGGERLAB_MIRROR``) is a base URL
holding the files under their usual names; an ``MD5SUMS`` file there (the
``md5sum`` format) replaces the pinned checksums of the files it lists, for
mirrors that repackage them. Trust the mirror you name.
"""

from __future__ import annotations

import errno
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from triggerlab.data.fetch.archives import unpack
from triggerlab.data.fetch.download import DownloadError, fetch_url, verify
from triggerlab.data.fetch.sources import SOURCES, RemoteFile, Source, source
from triggerlab.errors import ArgumentError, ConfigError, DataFormatError
from triggerlab.files import file_digest
from triggerlab.progress import Reporter, Update, report

STAGING = ".triggerlab-fetch"
UNPACKING = ".triggerlab-unpack"
DATA_ENV = "TRIGGERLAB_DATA"
MIRROR_ENV = "TRIGGERLAB_MIRROR"
URL_SCHEMES = ("http", "https", "ftp", "file")
# A mirror whose MD5SUMS replaces a pinned checksum repackaged the file: its size may differ
# from the official one, within this factor.
REPACKAGED = 2
# A root that cannot be a folder written by this user: no rights, a read-only file system,
# a part of its path that is a file.
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def default_root(name: str | None = None) -> Path:
    """``$TRIGGERLAB_DATA``, else the platform's per-user cache folder; ``/<name>`` appended."""
    import platformdirs

    base = Path(os.environ.get(DATA_ENV) or platformdirs.user_cache_dir("triggerlab"))
    return base / name if name else base


def manual_route(src: Source, root: Path) -> str:
    """How to get the files by hand, and where they go."""
    if src.manual:
        return f"{src.manual}; root folder: {root}"
    urls = "; ".join(f"{f.name} from {f.urls[0]}" for f in src.files)
    checks = f"check their MD5 ({', '.join(f.md5 for f in src.files)})"
    if not any(f.extract for f in src.files):
        return f"download {urls}, {checks} and place them in {root} ({src.where or 'as they are'})"
    return f"download {urls}, {checks}, unpack them into {root} so that it holds " + ", ".join(
        src.required
    )


def checked_mirror(mirror: str | None) -> str | None:
    """The mirror (``mirror``, else ``$TRIGGERLAB_MIRROR``) when it is a URL; None without one."""
    given = mirror is not None
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is None:
        return None
    try:
        parts = urllib.parse.urlsplit(mirror)
    except ValueError:
        parts = urllib.parse.urlsplit("")
    if parts.scheme in URL_SCHEMES and (parts.netloc or (parts.scheme == "file" and parts.path)):
        return mirror
    expected = f"not a URL (expected one starting with {', '.join(s + '://' for s in URL_SCHEMES)})"
    if given:
        raise ArgumentError("mirror", expected, repr(mirror))
    raise ConfigError(f"{MIRROR_ENV} {mirror!r}: {expected}")


def mirror_checksums(mirror: str) -> dict[str, str]:
    """The mirror's ``MD5SUMS`` (name -> MD5), or nothing when it has none."""
    url = mirror.rstrip("/") + "/MD5SUMS"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read(1 << 20).decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 32:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _download(
    remote: RemoteFile, staging: Path, urls: list[str], md5: str, progress: Reporter | None
) -> Path:
    """The verified file in ``staging``: already there, or downloaded from the first URL that
    gives it."""
    done = staging / remote.name
    if done.exists():
        if file_digest(done, "md5") == md5:
            return done
        done.unlink()  # emptied or damaged since it was verified: download it again
    part = staging / f"{remote.name}.part"
    limit = remote.limit
    if limit is not None and md5 != remote.md5:
        limit *= REPACKAGED
    problems = []
    for url in urls:
        try:
            fetch_url(url, part, remote.size, progress, limit)
        except DownloadError as exc:
            problems.append(str(exc))
            continue
        verify(part, md5, remote.name, url)
        part.rename(done)
        return done
    raise DownloadError("; ".join(problems))


def _place(unpacked: Path, root: Path) -> None:
    """Rename every unpacked top-level entry into the root, replacing an incomplete one."""
    for entry in sorted(unpacked.iterdir()):
        destination = root / entry.name
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        elif destination.exists():
            destination.unlink()
        entry.rename(destination)


def _fetch_one(
    name: str,
    src: Source,
    remote: RemoteFile,
    root: Path,
    mirror: str | None,
    sums: dict[str, str],
    progress: Reporter | None,
) -> None:
    """Download and verify one file, then unpack it into the root's unpacking folder."""
    staging, unpacked = root / STAGING, root / UNPACKING
    urls = [mirror.rstrip("/") + "/" + remote.name] if mirror else list(remote.urls)
    try:
        archive = _download(remote, staging, urls, sums.get(remote.name, remote.md5), progress)
    except DownloadError as exc:
        raise ConfigError(
            f"could not download {name}: {exc}. {src.lacking(root)}. To place it by hand: "
            f"{manual_route(src, root)}"
        ) from None
    if not remote.extract:
        unpacked.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, unpacked / remote.name)
        return
    try:
        unpack(archive, unpacked, remote.strip, remote.unpacked)
    except DataFormatError:
        archive.unlink(missing_ok=True)  # an unsafe archive is not kept for the next attempt
        raise


def fetch_dataset(
    name: str,
    root: Path | str | None = None,
    *,
    mirror: str | None = None,
    progress: Reporter | None = None,
) -> Path:
    """Download, verify and unpack ``name`` into ``root`` (default: ``default_root(name)``)
    unless a complete copy is there; returns the root. ConfigError when it cannot be
    downloaded (the message names the URL, what the copy lacks and the manual route) or the
    root is not a folder that can be written; DataFormatError when a file does not have its
    checksum or an archive is unsafe, damaged or incomplete. Nothing is put in place unless
    every file of a complete copy is there."""
    src = source(name)
    from_env = root is None and bool(os.environ.get(DATA_ENV))
    root = Path(root) if root is not None else default_root(name)
    if not src.fetchable:
        raise ConfigError(f"{name} cannot be downloaded automatically: {manual_route(src, root)}")
    mirror = checked_mirror(mirror)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{_root_named(root, from_env)} is a file, not a folder to fetch into")
    if not src.missing(root):
        return root
    sums = mirror_checksums(mirror) if mirror else {}
    created = [p for p in (*reversed(root.parents), root, root / STAGING) if not p.exists()]
    unpacked = root / UNPACKING
    try:
        (root / STAGING).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        for number, remote in enumerate(src.files, start=1):
            _fetch_one(name, src, remote, root, mirror, sums, progress)
            note = f"{remote.name} verified"
            report(progress, Update(f"fetch {name}", number, len(src.files), note, milestone=True))
        _refuse_incomplete(name, src, root)
        _place(unpacked, root)
    except BaseException as exc:
        shutil.rmtree(unpacked, ignore_errors=True)  # nothing half-unpacked stays behind
        for folder in reversed(created):  # folders made here that hold nothing to resume
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
            raise ConfigError(_unwritable(exc, root, from_env)) from None
        raise
    shutil.rmtree(unpacked, ignore_errors=True)
    shutil.rmtree(root / STAGING, ignore_errors=True)
    return root


def _root_named(root: Path, from_env: bool) -> str:
    return f"the dataset folder {root}" + (f" (from {DATA_ENV})" if from_env else "")


def _unwritable(exc: OSError, root: Path, from_env: bool) -> str:
    where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != root else ""
    return (
        f"cannot write in {_root_named(root, from_env)}: {exc.strerror}{where}; "
        "expected a folder this user can create and write in"
    )


def _refuse_incomplete(name: str, src: Source, root: Path) -> None:
    """DataFormatError, the downloads deleted, when what was unpacked is not a complete copy:
    nothing goes in place then, not even the files that are there."""
    lacking = src.missing(root / UNPACKING)
    if not lacking:
        return
    shutil.rmtree(root / STAGING, ignore_errors=True)  # they cannot make a complete copy
    raise DataFormatError(
        f"{name}: the downloaded files lack {', '.join(lacking)}; nothing was put in place in "
        f"{root} and the downloads were deleted"
    )


__all__ = ["SOURCES", "default_root", "fetch_dataset", "manual_route", "source"]
