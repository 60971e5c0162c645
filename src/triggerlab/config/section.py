"""What every config section shares: strictness, finite numbers, bounds, plain names."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

# Bounds on numbers that no experiment needs to exceed: they catch typos and overflows early.
MAX_SEED = 2**32 - 1
MAX_SIDE = 4096
MAX_EPOCHS = 100_000
MAX_LR = 10.0


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


def plain_name(value: str | None) -> str | None:
    """One plain path component: a folder name that stays inside its parent."""
    if value is None:
        return None
    if value in ("", ".", "..") or any(c in value for c in "/\\\0") or Path(value).is_absolute():
        raise ValueError(
            f"{value!r} is not a plain folder name; expected one path component without "
            "'/', '\\' or NUL, not '.' or '..'"
        )
    return value
