"""Getting datasets: ``triggerlab data fetch``, ``data.download: true`` and ``data check``.

A fetch downloads each file into ``<root>/.triggerlab-fetch/`` (``.part`` while
it arrives, resumed by a Range request after an interruption), verifies its
pinned MD5 before anything is unpacked, unpacks into a fresh folder beside the
root's contents and only then renames the unpacked entries into place: an
interrupted or refused fetch never leaves a copy that looks complete.

A mirror (``mirror=`` / ``--mirror`` / ``TRIGGERLAB_MIRROR``) is a base URL
holding the files under their usual names; an ``MD5SUMS`` file there (the
``md5sum`` format) replaces the pinned checksums of the files it lists, for
mirrors that repackage them. Trust the mirror you name.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from triggerlab.data.fetch.archives import unpack
from triggerlab.data.fetch.download import DownloadError, fetch_url, verify
from triggerlab.data.fetch.sources import SOURCES, RemoteFile, Source, source
from triggerlab.errors import ConfigError, DataFormatError
from triggerlab.progress import Reporter, Update, report

STAGING = ".triggerlab-fetch"
UNPACKING = ".triggerlab-unpack"
DATA_ENV = "TRIGGERLAB_DATA"
MIRROR_ENV = "TRIGGERLAB_MIRROR"


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
    return (
        f"download {urls}, check their MD5 ({', '.join(f.md5 for f in src.files)}), unpack them "
        f"into {root} so that it holds {', '.join(src.required)}"
    )


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
        return done
    part = staging / f"{remote.name}.part"
    problems = []
    for url in urls:
        try:
            fetch_url(url, part, remote.size, progress)
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
            f"could not download {name}: {exc}. To place it by hand: {manual_route(src, root)}"
        ) from None
    if not remote.extract:
        unpacked.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, unpacked / remote.name)
        return
    try:
        unpack(archive, unpacked, remote.strip)
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
    downloaded (the message names the URL and the manual route), DataFormatError when a file
    does not have its checksum or an archive is unsafe."""
    src = source(name)
    root = Path(root) if root is not None else default_root(name)
    if not src.fetchable:
        raise ConfigError(f"{name} cannot be downloaded automatically: {manual_route(src, root)}")
    if not src.missing(root):
        return root
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    sums = mirror_checksums(mirror) if mirror else {}
    created = [p for p in (root, root / STAGING) if not p.exists()]
    staging = root / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    unpacked = root / UNPACKING
    shutil.rmtree(unpacked, ignore_errors=True)
    try:
        for number, remote in enumerate(src.files, start=1):
            _fetch_one(name, src, remote, root, mirror, sums, progress)
            note = f"{remote.name} verified"
            report(progress, Update(f"fetch {name}", number, len(src.files), note, milestone=True))
    except BaseException:
        shutil.rmtree(unpacked, ignore_errors=True)  # nothing half-unpacked stays behind
        for folder in reversed(created):  # folders made here that hold nothing to resume
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    _place(unpacked, root)
    shutil.rmtree(unpacked, ignore_errors=True)
    missing = src.missing(root)
    if missing:
        raise DataFormatError(f"{name}: the downloaded files lack {', '.join(missing)}")
    shutil.rmtree(staging, ignore_errors=True)
    return root


__all__ = ["SOURCES", "default_root", "fetch_dataset", "manual_route", "source"]
