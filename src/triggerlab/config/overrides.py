"""``KEY=VALUE`` overrides of a raw config mapping, applied before validation."""

from __future__ import annotations

import copy
from typing import Any

from triggerlab.config.yaml_input import parse_yaml
from triggerlab.errors import ArgumentError, ConfigError


def split_assignments(text: str) -> list[str]:
    """Split ``"kind=frame colors=[red, blue]"`` on whitespace outside brackets and quotes."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    quote = ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char.isspace() and depth == 0:
            if current:
                items.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        items.append("".join(current))
    return items


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as a YAML scalar or list)."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ArgumentError(
            "overrides", "expected KEY=VALUE with a dotted key, e.g. poison.rate=0.05", repr(item)
        )
    try:
        value = parse_yaml(text, "the value")
    except ConfigError as exc:
        raise ArgumentError("overrides", str(exc), repr(item)) from None
    return parts, value


def set_dotted(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``parts = [a, b, c]``, creating sections as needed.

    Setting a section's ``kind`` to a different value (``trigger.kind=frame``)
    starts that section afresh: the old kind's parameters would not fit the new
    one.
    """
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"{prefix} is a value, not a section")
        node = child
    if parts[-1] == "kind" and node.get("kind", value) != value:
        node.clear()
    node[parts[-1]] = value


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``KEY=VALUE`` override to ``raw`` in place."""
    parts, value = parse_override(item)
    try:
        set_dotted(raw, parts, value)
    except ConfigError as exc:
        raise ArgumentError("overrides", str(exc), repr(item)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides to a deep copy of a raw config mapping."""
    result = copy.deepcopy(raw)
    for item in overrides:
        apply_override(result, item)
    return result
