"""What the listing commands print: the catalogues' names, summaries, parameters and defaults.

``triggerlab datasets``, ``models``, ``defenses`` and ``triggers list`` read the
torch-free declarations in ``triggerlab.catalogue``, so they answer without importing
torch or any implementation.
"""

from __future__ import annotations

from typing import Any

from triggerlab.catalogue.colors import NAMED_COLORS
from triggerlab.catalogue.datasets import DATASETS
from triggerlab.catalogue.defenses import DEFENSE_KINDS
from triggerlab.catalogue.geometry import NAMED_POSITIONS
from triggerlab.catalogue.models import MODELS
from triggerlab.catalogue.papers import TRIGGER_PAPERS, Preset
from triggerlab.catalogue.triggers import TRIGGER_KINDS
from triggerlab.config.schema import paper_label_mode
from triggerlab.data.fetch.sources import SOURCES


def shown_default(field: Any) -> str:
    """A parameter's default as a user would write it, or ``(required)``."""
    return "(required)" if field.is_required() else repr(field.default)


def spec_parameters(spec: Any) -> list[list[str]]:
    """``[name, default, description]`` of each field of a pydantic spec but its ``kind``."""
    return [
        [name, shown_default(field), field.description or ""]
        for name, field in spec.model_fields.items()
        if name != "kind"
    ]


def preset_summary(preset: Preset) -> str:
    """``key=value, ...`` of a trigger preset's settings, poisoning included, and its source."""
    settings = {**preset.trigger, **{f"poison.{k}": v for k, v in preset.poison.items()}}
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()
    )
    return f"{shown} ({preset.source})"


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def build_listings() -> dict[str, Any]:
    """Every listing's content, read from the catalogues."""

    def options(values: dict[str, object]) -> str:
        return ", ".join(f"{k}={v}" for k, v in values.items())

    return {
        "datasets": [
            {
                "name": info.name,
                "summary": info.summary,
                "layout": info.layout,
                "options": options(info.options),
            }
            for info in DATASETS.values()
        ],
        "fetchable": [name for name, src in SOURCES.items() if src.fetchable],
        "models": [
            {"name": name, "summary": entry.summary, "options": options(entry.options)}
            for name, entry in MODELS.items()
        ],
        "defenses": [
            {
                "kind": kind,
                "needs": [
                    need
                    for need, flag in (
                        ("held-back clean data", spec.holds_back_data),
                        ("classes", spec.needs_classes),
                    )
                    if flag
                ],
                "parameters": spec_parameters(spec),
            }
            for kind, spec in DEFENSE_KINDS.items()
        ],
        "triggers": [
            {
                "kind": kind,
                "summary": first_line(spec.__doc__),
                "paper": TRIGGER_PAPERS[kind].citation,
                "label_mode": TRIGGER_PAPERS[kind].label_mode,
                # what poison.label_mode: paper (the default) runs on a classification task
                "default_label_mode": paper_label_mode(kind, 0),
                "presets": {
                    name: preset_summary(preset)
                    for name, preset in TRIGGER_PAPERS[kind].presets.items()
                },
                "parameters": spec_parameters(spec),
            }
            for kind, spec in TRIGGER_KINDS.items()
        ],
        "colors": list(NAMED_COLORS),
        "positions": list(NAMED_POSITIONS),
    }
