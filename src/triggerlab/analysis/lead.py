"""The attack metric a grid's tables, figures and report lead with (``lead_metric`` of its
spec): ``asr`` counts non-target test images, ``asr_all`` every triggered test image, as
references 001's and 002's code count it (docs/references.md)."""

from __future__ import annotations

from pathlib import Path

from triggerlab.errors import TriggerlabError
from triggerlab.grid.store import SPEC_COPY, read_spec_copy

DEFAULT_LEAD = "asr"


def lead_setting(grid_dir: Path) -> str | None:
    """The grid spec's ``lead_metric`` (None when it leaves the default, or has no spec copy:
    results of a grid written elsewhere)."""
    if not (grid_dir / SPEC_COPY).is_file():
        return None
    try:
        return read_spec_copy(grid_dir).lead_metric
    except TriggerlabError:
        return None


def lead_metric(grid_dir: Path) -> str:
    """The attack success metric to lead with: the spec's, else ``asr``."""
    return lead_setting(grid_dir) or DEFAULT_LEAD


def led(metrics: list[str], lead: str | None) -> list[str]:
    """``metrics`` with ``lead`` first when the spec sets one (the default order otherwise,
    so grids without the setting print as before)."""
    if lead is None or lead not in metrics:
        return metrics
    return [lead, *(m for m in metrics if m != lead)]
