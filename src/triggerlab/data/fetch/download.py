"""One file over HTTP: streamed to ``<name>.part``, resumed with a Range request when the
server allows it, checked against its checksum before anyone may use it."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from pathlib import Path

from triggerlab.errors import DataFormatError
from triggerlab.files import file_digest
from triggerlab.progress import Reporter, Update, report

CHUNK = 1 << 16
TIMEOUT_S = 30


class DownloadError(Exception):
    """The server could not give the file (unreachable, an HTTP error, a cut connection)."""


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.1f} MB"


def fetch_url(
    url: str,
    part: Path,
    expected_size: int | None,
    progress: Reporter | None,
    limit: int | None = None,
) -> None:
    """Append what ``part`` lacks of ``url``'s body to it (all of it when the server ignores
    the range); DownloadError when the server cannot give it, or offers or sends more than
    ``limit`` bytes (then it is not the file: the part is deleted)."""
    have = part.stat().st_size if part.exists() else 0
    if limit is not None and have > limit:
        part.unlink()  # longer than the file can be: not a start worth resuming
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "triggerlab"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part is already whole: the checksum will tell
            return
        raise DownloadError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason})") from None
    try:
        with response:
            _receive(url, response, part, have, expected_size, progress, limit)
    except TooLong:
        part.unlink(missing_ok=True)
        raise


class TooLong(DownloadError):
    """The server offers or sends more bytes than the file has."""


def _too_long(url: str, limit: int) -> TooLong:
    size = f"{limit:,} bytes" + (f" ({_megabytes(limit)})" if limit >= 1_000_000 else "")
    return TooLong(
        f"{url}: the server sends more than the {size} the file has, so it is not that file; "
        "the download was stopped and deleted"
    )


def _receive(
    url: str,
    response: http.client.HTTPResponse,
    part: Path,
    have: int,
    expected_size: int | None,
    progress: Reporter | None,
    limit: int | None,
) -> None:
    """Stream the response's body into ``part``, never past ``limit`` bytes in all."""
    resumed = response.status == 206
    if not resumed:
        have = 0  # the server sends the whole file: start the part again
    length = response.headers.get("Content-Length")
    total = have + int(length) if length and length.isdigit() else expected_size or 0
    if limit is not None and total > limit:
        raise _too_long(url, limit)  # refused before a byte is written
    start, done = time.monotonic(), have
    with open(part, "ab" if resumed else "wb") as out:
        while True:
            try:
                block = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{url}: the connection broke ({exc})") from None
            if not block:
                break
            done += len(block)
            if limit is not None and done > limit:  # an endless or oversized stream: cut
                raise _too_long(url, limit)
            out.write(block)
            speed = (done - have) / max(time.monotonic() - start, 1e-6)
            note = f"{_megabytes(done)} of {_megabytes(total)}, {_megabytes(speed)}/s"
            report(progress, Update(f"download {part.stem}", done, total or done, note))
    if total and done < total:
        raise DownloadError(f"{url}: the connection closed after {done} of {total} bytes")


def verify(path: Path, md5: str, name: str, source: str) -> None:
    """DataFormatError (and the file deleted) when ``path`` does not have the pinned checksum."""
    found = file_digest(path, "md5")
    if found != md5:
        path.unlink(missing_ok=True)
        raise DataFormatError(
            f"{name} from {source}: its MD5 is {found}, expected {md5}; the file was deleted "
            "(a damaged download, or a different file at that address)"
        )
