"""What a run that computes its low-frequency pattern needs (``run/lf_pattern.py`` computes
it), checked with the other inputs before anything trains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triggerlab.catalogue.triggers import LowFrequencySpec
from triggerlab.config import ExperimentConfig
from triggerlab.errors import ConfigError

RUN_COPY = "lf_pattern.npy"  # the pattern a run used, kept in its folder (rebuild reads it)


@dataclass(frozen=True)
class RunPattern:
    path: Path
    record: dict[str, Any]  # summary.json's trigger_pattern


# Gives a run its pattern, told whether the task is regression (``lf_pattern.run_pattern``).
PatternSource = Callable[[bool], RunPattern]


def needs_pattern(cfg: ExperimentConfig) -> bool:
    """The run computes its low-frequency pattern (``pattern: uap`` without a file)."""
    trigger = cfg.trigger
    return isinstance(trigger, LowFrequencySpec) and trigger.computed_by_run


def without_pattern(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the random smooth pattern in place of the one a run computes: for checks
    that train nothing (the grid's preflight, the cost estimate)."""
    if not needs_pattern(cfg):
        return cfg
    return cfg.model_copy(update={"trigger": cfg.trigger.without_surrogate()})  # type: ignore[union-attr]


def with_pattern(cfg: ExperimentConfig, path: Path) -> ExperimentConfig:
    """``cfg`` with the pattern file a run computed (its config keeps no path)."""
    return cfg.model_copy(update={"trigger": cfg.trigger.model_copy(update={"path": path})})


def class_target(cfg: ExperimentConfig, is_regression: bool) -> int:
    """The class the run's pattern moves images to; ConfigError where there is none."""
    fix = "set trigger.pattern: random_smooth, or trigger.path to a pattern file"
    if is_regression:
        raise ConfigError(
            "trigger.pattern: uap (the default) is a universal adversarial perturbation "
            f"towards a target class; this task is regression, which has none; {fix}"
        )
    if cfg.poison.label_mode == "all_to_all" or not isinstance(cfg.poison.target, int):
        raise ConfigError(
            "trigger.pattern: uap (the default) is a perturbation towards one target class; "
            f"poison.label_mode {cfg.poison.label_mode} has no single target; {fix}"
        )
    return cfg.poison.target


def check_pattern_run(cfg: ExperimentConfig, is_regression: bool) -> None:
    """What a run computing its pattern needs, refused before anything trains."""
    if not needs_pattern(cfg):
        return
    class_target(cfg, is_regression)
    if cfg.trigger.stage != "model_input":
        raise ConfigError(
            "trigger.stage: the pattern a run computes is the size of the model's inputs; "
            "set stage: model_input, or trigger.path to a pattern file of the stored size"
        )


def file_record(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """summary.json's trigger_pattern of a run that reads its pattern from ``trigger.path``."""
    trigger = cfg.trigger
    if isinstance(trigger, LowFrequencySpec) and trigger.pattern == "uap" and trigger.path:
        return {"pattern": "uap", "source": "file", "path": str(trigger.path)}
    return None
