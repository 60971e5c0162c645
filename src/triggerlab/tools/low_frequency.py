"""``triggerlab triggers lf-pattern``: Zeng et al.'s low-frequency trigger for a config, as a file.

A run with ``trigger: {kind: low_frequency}`` computes this pattern itself and keeps it in
the cache folder (``run/lf_pattern.py``); this command writes the same pattern (the same
surrogate: the config's network trained clean on its data and split with the fixed
surrogate seed; the same universal perturbation) to a file of one's choice, with the clean
models kept under ``cache``, to share, inspect or use as ``trigger.path``.

As BackdoorBench's generator (``resource/lowFrequency/generate_pattern.py:230-269``):
100 random training images, target the config's ``poison.target``. Where it measures
the fooling rate on 10 *test* images per class, triggerlab takes 10 training images per
class outside those 100: an attacker has no test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from triggerlab.config import ExperimentConfig
from triggerlab.errors import ArgumentError
from triggerlab.files import write_bytes_atomic
from triggerlab.run.experiment import run_experiment
from triggerlab.run.lf_checks import class_target
from triggerlab.run.lf_pattern import (
    CLEAN,
    SURROGATE_SEED,
    clean_model,
    config_digest,
    npy_bytes,
    surrogate_config,
    uap_pattern,
)

__all__ = ["CLEAN", "LowFrequencyPattern", "generate_lf_pattern"]


@dataclass(frozen=True)
class LowFrequencyPattern:
    path: Path
    fooling_rates: list[float]
    passes: int
    trained: bool  # the clean model was trained now (False: loaded from the cache)
    key: str
    target: int


def generate_lf_pattern(
    cfg: ExperimentConfig,
    out: Path,
    cache: Path,
    images: int = 100,
    check_per_class: int = 10,
    max_passes: int = 50,
) -> LowFrequencyPattern:
    """Write ``out`` (.npy, H x W x C uint8 on 0-255, as BackdoorBench's pattern files) for
    ``trigger: {kind: low_frequency, path: out}``."""
    if out.suffix != ".npy":
        raise ArgumentError("out", "must end in .npy (a pattern file)", str(out))
    clean = surrogate_config(cfg)
    key = config_digest(clean)
    made = clean_model(clean, cache, key, run_experiment)
    target = class_target(cfg, made.ctx.data.is_regression)
    pattern = uap_pattern(made, target, SURROGATE_SEED, images, check_per_class, max_passes)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, npy_bytes(pattern.pattern))
    return LowFrequencyPattern(
        out, pattern.fooling_rates, pattern.passes, made.trained, key, target
    )
