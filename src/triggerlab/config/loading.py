"""Loading a config: YAML in, one validated ``ExperimentConfig`` or one ``ConfigError`` out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from triggerlab.config.messages import format_validation_error
from triggerlab.config.overrides import apply_overrides
from triggerlab.config.schema import DEFAULT_EXPERIMENT, ExperimentConfig
from triggerlab.config.yaml_input import read_yaml
from triggerlab.errors import ConfigError


def validate_config(raw: Any, source: str = "") -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid config {source}: expected a mapping of sections, got {type(raw).__name__}"
        )
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(
    path: Path | str | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """The config at ``path`` (or the embedded default) with ``KEY=VALUE`` overrides applied."""
    path = None if path is None else Path(path)
    raw = DEFAULT_EXPERIMENT if path is None else read_yaml(path)
    source = "(embedded default)" if path is None else str(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid config {source}: expected a mapping of sections, got {type(raw).__name__}"
        )
    return validate_config(apply_overrides(raw, overrides or []), source)


def override(cfg: ExperimentConfig, *overrides: str) -> ExperimentConfig:
    """A new config: ``cfg`` with ``KEY=VALUE`` overrides applied and everything validated."""
    raw = cfg.model_dump(mode="json")
    return validate_config(apply_overrides(raw, list(overrides)), "(override)")
