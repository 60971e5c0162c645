"""Validation errors as people read them: one line per problem, naming the dotted key."""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import BaseModel, ValidationError

from triggerlab.catalogue.triggers import TRIGGER_KINDS
from triggerlab.config.schema import UNION_MEMBER_TAGS, UNION_SECTIONS, ExperimentConfig


def section_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (the parent of an unknown key)."""
    cls: type[BaseModel] = ExperimentConfig
    kinds: dict[str, type[BaseModel]] = {}
    for part in loc:
        if isinstance(part, int):  # an item of a list of specs (compose's triggers)
            continue
        if part in kinds:  # the tag pydantic puts after a union section
            cls, kinds = kinds[part], {}
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return []
        kinds = UNION_SECTIONS.get(part, TRIGGER_KINDS if part == "triggers" else {})
        if kinds:
            cls = next(iter(kinds.values()))  # no tag given: the section's default kind
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            cls = field.annotation
        else:
            return []
    tagged = any(cls in k.values() for k in UNION_SECTIONS.values())
    return [n for n in cls.model_fields if not (tagged and n == "kind")]


def _is_union_tag(loc: tuple[Any, ...], i: int) -> bool:
    """Pydantic inserts the discriminator value ("patch") into locations; users never write it."""
    if i == 0:
        return False
    if loc[i] in UNION_MEMBER_TAGS:
        return True
    for section, kinds in UNION_SECTIONS.items():
        if loc[i] in kinds and (loc[i - 1] == section or isinstance(loc[i - 1], int)):
            return True
    return False


def _union_tag_message(error: dict[str, Any]) -> str:
    """``Input should be 'a', 'b' or 'c' (got 'x')``, like pydantic's message for a literal."""
    tags = [t.strip() for t in str(error["ctx"]["expected_tags"]).split(",")]
    listed = ", ".join(tags[:-1]) + f" or {tags[-1]}" if len(tags) > 1 else tags[0]
    return f"Input should be {listed} (got {error['ctx']['tag']!r})"


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    """``unknown key; expected one of ...``, saying which kinds have it in a tagged section."""
    allowed = section_keys(loc[:-1])
    message = "unknown key" + (f"; expected one of {', '.join(allowed)}" if allowed else "")
    section, kind = (loc[0], loc[1]) if len(loc) > 2 else (None, None)
    if section in UNION_SECTIONS and kind in UNION_SECTIONS[section]:
        owners = [k for k, spec in UNION_SECTIONS[section].items() if loc[-1] in spec.model_fields]
        if owners:
            message = (
                f"unknown key for {section} kind {kind!r}; it belongs to {', '.join(owners)} "
                f"(set {section}.kind first)"
            ) + (f"; {kind!r} has {', '.join(allowed)}" if allowed else "")
    return message


def quoted(value: Any) -> str:
    """A short repr of user input: long strings, deep or shared structures are cut."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 3, 6, 6
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 80, 80, 40
MAX_PROBLEMS = 20


def format_validation_error(
    err: ValidationError, source: str, schema: type[BaseModel] = ExperimentConfig
) -> str:
    """One line per problem (at most ``MAX_PROBLEMS``), naming the dotted key."""
    lines = []
    problems = err.errors()
    for e in problems[:MAX_PROBLEMS]:
        loc = tuple(e["loc"])
        parts = [p for i, p in enumerate(loc) if not _is_union_tag(loc, i)]
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
        key = key or "(top level)"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "union_tag_invalid":
            key, message = f"{key}.kind", _union_tag_message(e)
        elif e["type"] == "extra_forbidden" and schema is ExperimentConfig:
            message = _unknown_key_message(loc)
        elif e["type"] == "extra_forbidden":
            message = f"unknown key; expected one of {', '.join(schema.model_fields)}"
        elif e["type"] == "missing":
            message = "required key is missing"
        elif "input" in e and e["type"] not in ("union_tag_invalid", "value_error"):
            message += f" (got {quoted(e['input'])})"
        lines.append(f"  {key}: {message}")
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_PROBLEMS} more problems")
    return f"invalid config {source}:\n" + "\n".join(lines)
