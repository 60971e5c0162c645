"""A grid spec: a base experiment, the keys it varies, repeats and clean baselines (YAML)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from triggerlab.catalogue.strict import StrictNumbers
from triggerlab.config import (
    UNION_SECTIONS,
    ExperimentConfig,
    apply_override,
    apply_overrides,
    format_validation_error,
    parse_override,
    read_yaml,
    section_keys,
    validate_config,
)
from triggerlab.config.schema import MAX_SEED, plain_name
from triggerlab.errors import ConfigError


class GridSpec(StrictNumbers):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(
        None, description="grid name, one plain folder name (default: the spec file's name)"
    )
    base: dict[str, Any] = Field(
        default_factory=dict, description="the experiment every run starts from"
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="dotted key -> values (product)"
    )
    zip: list[dict[str, list[Any]]] = Field(
        default_factory=list, description="groups of keys whose values vary together"
    )
    repeats: int = Field(
        1, ge=1, le=1000, description="runs per cell, each with its own derived seed"
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="base seed the repeat seeds are derived from"
    )
    clean_baseline: bool = Field(
        False, description="add a rate-0 run per cell for the clean accuracy drop"
    )
    lead_metric: Literal["asr", "asr_all"] | None = Field(
        None,
        description="the attack success metric the grid's tables, figures and report lead "
        "with (null: asr, non-target test images); asr_all counts every triggered test image, "
        "the target class's too, as references 001's and 002's code do",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return plain_name(value)

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has an empty list of values")
        return grid

    @model_validator(mode="after")
    def _consistent(self) -> GridSpec:
        seen = set(self.grid)
        for number, group in enumerate(self.zip):
            lengths = {key: len(values) for key, values in group.items()}
            if not group or min(lengths.values()) == 0:
                raise ValueError(f"zip group {number} is empty or has an empty list of values")
            if len(set(lengths.values())) > 1:
                raise ValueError(f"zip group {number}: lists must have one length, got {lengths}")
            repeated = seen & set(group)
            if repeated:
                raise ValueError(f"zip group {number} repeats varied key(s) {sorted(repeated)}")
            seen |= set(group)
        if "train.seed" in seen:
            raise ValueError("vary seeds with repeats and seed, not with train.seed")
        return self

    def varied_keys(self) -> list[str]:
        return [*self.grid, *(key for group in self.zip for key in group)]

    def axis_lengths(self) -> list[int]:
        """The number of values of each axis: a ``grid`` key, or a ``zip`` group."""
        return [len(values) for values in self.grid.values()] + [
            len(next(iter(group.values()))) for group in self.zip
        ]

    def run_count(self) -> int:
        """The runs the spec plans at most, counted without expanding it: cells x repeats,
        twice that with clean baselines (fewer where a baseline is shared or is a cell)."""
        return math.prod(self.axis_lengths()) * self.repeats * (2 if self.clean_baseline else 1)

    def cells(self) -> Iterator[dict[str, Any]]:
        """Every combination of varied values, in spec order."""
        axes: list[list[dict[str, Any]]] = [
            [{key: v} for v in values] for key, values in self.grid.items()
        ]
        for group in self.zip:
            length = len(next(iter(group.values())))
            axes.append([{key: values[i] for key, values in group.items()} for i in range(length)])
        for combination in itertools.product(*axes):
            cell: dict[str, Any] = {}
            for part in combination:
                cell.update(part)
            yield cell


def _with_base(path: Path) -> dict[str, Any]:
    """The spec's YAML with a ``base`` given as a path (relative to the spec) read in."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid grid spec {path}: expected a mapping, got {type(raw).__name__}")
    if isinstance(raw.get("base"), str):
        base_path = path.parent / raw["base"]
        try:
            base_path = base_path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise ConfigError(
                f"grid spec {path}: base {raw['base']!r} cannot be resolved to a file ({exc})"
            ) from None
        base = read_yaml(base_path)
        if not isinstance(base, dict):
            raise ConfigError(f"invalid base config {base_path}: expected a mapping")
        raw["base"] = base
    return raw


def is_grid_spec(path: Path | str) -> bool:
    """Whether a YAML file is a grid spec (it has a ``base`` and names no experiment section)."""
    raw = read_yaml(Path(path))
    return (
        isinstance(raw, dict)
        and "base" in raw
        and not set(raw) & set(ExperimentConfig.model_fields)
    )


def base_experiment(path: Path | str, overrides: list[str] | None = None) -> ExperimentConfig:
    """One cell of a grid spec: its base experiment with ``KEY=VALUE`` overrides (the cell's
    varied keys among them), validated like any config."""
    path = Path(path)
    raw = _with_base(path).get("base") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid grid spec {path}: base must be a mapping or a path")
    return validate_config(apply_overrides(raw, overrides or []), f"{path} (its base)")


def load_grid_spec(path: Path | str, overrides: list[str] | None = None) -> GridSpec:
    """Read a grid spec; a ``base`` given as a path is read relative to the spec file."""
    path = Path(path)
    raw = _with_base(path)
    for item in overrides or []:
        apply_grid_override(raw, item)
    raw.setdefault("name", path.stem)
    try:
        spec = GridSpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"grid spec {path}", GridSpec)) from None
    check_keys(spec)
    return spec


def apply_grid_override(raw: dict[str, Any], item: str) -> None:
    """One ``KEY=VALUE`` override of a grid spec. Grid axes are dotted keys themselves, so
    ``grid.trigger.size=[2, 4]`` sets the axis ``trigger.size`` (everything after ``grid.``)."""
    parts, value = parse_override(item)
    if parts[0] != "grid" or len(parts) < 2:
        apply_override(raw, item)
        return
    axes = raw.setdefault("grid", {})
    if not isinstance(axes, dict):
        raise ConfigError(f"grid: expected a mapping of keys to value lists, got {axes!r}")
    axes[".".join(parts[1:])] = value


def check_keys(spec: GridSpec) -> None:
    """Every varied key must exist in the experiment schema: checked on the base alone."""
    for key in spec.varied_keys():
        parts = key.split(".")
        allowed = (
            section_keys(tuple(parts[:-1]))
            if len(parts) > 1
            else list(ExperimentConfig.model_fields)
        )
        if parts[-1] not in allowed and not _checked_per_cell(parts):
            raise ConfigError(
                f"grid key {key!r} is not an experiment setting"
                + (
                    f"; {'.'.join(parts[:-1]) or 'top level'} has {', '.join(allowed)}"
                    if allowed
                    else ""
                )
            )


def _checked_per_cell(parts: list[str]) -> bool:
    """Keys inside free mappings (``data.options``) and kind-dependent sections (``trigger``,
    ``defense``) are checked when each cell's config is validated."""
    return (len(parts) > 2 and parts[1] == "options") or parts[0] in UNION_SECTIONS
