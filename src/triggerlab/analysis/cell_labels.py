"""Short names for the values of a varied key, for axes, legends and annotations.

A grid that varies a whole trigger (``grid: {trigger: [{kind: patch, ...}, ...]}``)
has one YAML mapping per cell; printing them whole smears the axis. Each becomes
its kind plus the parameters that differ between the cells of that kind.
"""

from __future__ import annotations

from typing import Any

import yaml


def _mapping(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def is_spec(value: Any) -> bool:
    """Whether a table value is a whole section's mapping (a trigger, a defence)."""
    return _mapping(value) is not None


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return _mapping_label(value)
    return str(value)


def _mapping_label(spec: dict[str, Any], keys: list[str] | None = None) -> str:
    keys = [k for k in spec if k != "kind"] if keys is None else keys
    head = str(spec.get("kind", ""))
    parts = [f"{k}={_text(spec[k])}" for k in keys if k in spec]
    return " ".join([head, *parts]).strip()


def short_labels(values: list[Any]) -> dict[Any, str]:
    """``{value: label}``: mappings by kind and the parameters that vary within the kind."""
    specs = {v: _mapping(v) for v in values}
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for spec in specs.values():
        if spec is not None:
            by_kind.setdefault(str(spec.get("kind", "")), []).append(spec)
    varying = {
        kind: [
            k
            for k in dict.fromkeys(k for s in group for k in s)
            if k != "kind" and len({_text(s.get(k)) for s in group}) > 1
        ]
        for kind, group in by_kind.items()
    }
    labels: dict[Any, str] = {}
    for value, spec in specs.items():
        if spec is None:
            labels[value] = str(value)
        else:
            labels[value] = _mapping_label(spec, varying[str(spec.get("kind", ""))])
    seen: dict[str, int] = {}
    for value, label in labels.items():  # identical labels stay tellable apart
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[value] = f"{label} ({seen[label]})"
    return labels
