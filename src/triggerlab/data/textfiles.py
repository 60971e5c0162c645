"""Reading the small text files that datasets ship (class lists, annotations, poses)."""

from __future__ import annotations

from pathlib import Path

from triggerlab.errors import DataFormatError


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; DataFormatError naming the file when it is missing or binary."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
