"""What every config section shares: strictness, finite numbers, bounds, plain names."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict

from triggerlab.catalogue.strict import MAX_SEED, StrictNumbers

__all__ = ["MAX_EPOCHS", "MAX_LR", "MAX_SEED", "MAX_SIDE", "Section", "plain_name"]

# Bounds on numbers that no experiment needs to exceed: they catch typos and overflows early
# (the seed's bound is every declaration's: triggerlab.catalogue.strict).
MAX_SIDE = 4096
MAX_EPOCHS = 100_000
MAX_LR = 10.0


class Section(StrictNumbers):
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
