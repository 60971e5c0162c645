"""Zeng et al.'s low-frequency pattern for a run: a clean surrogate's low-passed universal
adversarial perturbation, computed once and kept in the cache folder.

``trigger: {kind: low_frequency}`` (``pattern: uap``, no ``path``) asks the run for the
paper's trigger. Before poisoning, ``prepare`` calls ``run_pattern``:

* **The surrogate** is the run's own network trained on the run's own data without any
  poisoning or defence (``surrogate_config``): data (with the run's split: its seed is
  pinned, so the surrogate never trains on the run's test images), model and every
  ``train`` setting as the run's, the poisoning section reset whole (any target shares it),
  and ``train.seed`` fixed to ``SURROGATE_SEED``, so every run of a grid on the same data,
  split, model and training shares one surrogate whatever its seed, trigger, target or
  defence. It is saved as a shared training (``shared_training.py``) under
  ``<cache>/clean_models/``, keyed by a hash of that clean config (``config_digest``).
* **The pattern** is the universal perturbation of ``triggers/universal.py`` towards the
  run's ``poison.target`` with BackdoorBench's generator settings (``UAP_SETTINGS``:
  ``resource/lowFrequency/generate_pattern.py:230-269``), written as uint8 H x W x C under
  ``<cache>/lf_patterns/<key>.npy`` with a JSON record beside it; the key hashes the
  surrogate's key and the settings. A lock per key makes parallel workers wait for the
  first one; files are written to a temporary name and renamed.

The cache folder is ``TRIGGERLAB_CACHE`` or the user cache (``feature_cache.cache_root``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from triggerlab.config import ExperimentConfig, override
from triggerlab.errors import ConfigError
from triggerlab.files import read_json, waiting_lock, write_bytes_atomic, write_json_atomic
from triggerlab.progress import Reporter, Update, ambient, report
from triggerlab.run.context import RunContext
from triggerlab.run.feature_cache import cache_root
from triggerlab.run.lf_checks import RunPattern, class_target
from triggerlab.run.prepare import prepare
from triggerlab.run.shared_training import SharedTraining
from triggerlab.run.stack_group import outside_stack
from triggerlab.triggers.universal import universal_perturbation

CLEAN = "clean_models"
PATTERNS = "lf_patterns"
SURROGATE_SEED = 0  # train.seed of every surrogate: one per data, split, model and training
# BackdoorBench's generator: 100 images, 10 per class to measure the fooling rate, 50 passes
UAP_SETTINGS = {"images": 100, "check_per_class": 10, "max_passes": 50}
FORMAT = 1  # of the pattern and its record; a change makes new keys


def clean_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` without poisoning or defence: what the clean model trains on. The poisoning
    section is reset whole, so patterns for any target share one clean model."""
    return override(
        cfg,
        "poison={rate: null, count: 0}",
        "defense={kind: none}",
        "trigger={kind: patch}",
        "output.save_model=false",
    )


def surrogate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The clean config of a run's surrogate: the run's split, ``SURROGATE_SEED``'s training."""
    return override(
        clean_config(cfg), f"data.seed={cfg.split_seed}", f"train.seed={SURROGATE_SEED}"
    )


# Settings that change where things are read or written, or how fast, not what trains.
_NOT_CONTENT = {"output": None, "data": ("root", "download"), "train": ("threads",)}


def config_digest(cfg: ExperimentConfig) -> str:
    """A hash of every setting that makes the clean model: the whole config, so a new setting
    makes new keys (a cache is then rebuilt, never read wrongly)."""
    dumped = cfg.model_dump(mode="json")
    for section, names in _NOT_CONTENT.items():
        if names is None:
            dumped.pop(section, None)
        else:
            for name in names:
                dumped[section].pop(name, None)
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CleanModel:
    model: nn.Module
    ctx: RunContext
    trained: bool  # trained now (False: loaded from the cache)
    key: str
    clean_acc: float | None  # on the clean config's test set, after the last epoch


def _relay(outer: Reporter | None) -> Reporter | None:
    """The clean model's progress, named as the surrogate's."""
    if outer is None:
        return None

    def relay(update: Update) -> None:
        outer(replace(update, stage=f"surrogate {update.stage}"))

    return relay


# Runs a config into a folder, its model saved as the shared training (``run_experiment``,
# handed down: the run is what calls this module).
TrainClean = Callable[..., Any]


def clean_model(clean: ExperimentConfig, cache: Path, key: str, train: TrainClean) -> CleanModel:
    """The trained clean model of ``clean`` (from ``cache``, or trained into it by ``train``)."""
    shared = SharedTraining(cache / CLEAN, key)
    ctx = prepare(clean)
    record = shared.load_into(ctx.model)
    trained = record is None
    if record is None:
        outer = ambient()
        report(
            outer,
            Update(
                "surrogate",
                0,
                1,
                f"training the clean surrogate model {key} for the low-frequency pattern "
                f"(once per data, model and training; kept in {cache / CLEAN})",
                True,
            ),
        )
        runs = cache / "clean_runs"
        runs.mkdir(parents=True, exist_ok=True)
        # a folder of its own: two workers may train (then one loads) the same clean model
        with tempfile.TemporaryDirectory(dir=runs, prefix=f"{key}-") as folder, outside_stack():
            train(clean, Path(folder) / "run", progress=_relay(outer), shared=shared)
        record = shared.load_into(ctx.model)
        if record is None:
            raise ConfigError(f"the clean model of {key} was not saved under {cache / CLEAN}")
    accuracy = record.history[-1].get("clean_acc") if record.history else None
    return CleanModel(ctx.model, ctx, trained, key, accuracy)


def pick_images(
    labels: torch.Tensor, count: int, per_class: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random indices, and ``per_class`` others of each class to check the rate."""
    order = torch.randperm(len(labels), generator=generator)
    chosen, rest = order[:count], order[count:]
    check = [rest[labels[rest] == c][:per_class] for c in torch.unique(labels).tolist()]
    return chosen, torch.cat(check)


@dataclass(frozen=True)
class UapPattern:
    pattern: torch.Tensor  # uint8 [H, W, C] on 0-255, as BackdoorBench's pattern files
    fooling_rates: list[float]
    passes: int


def uap_pattern(
    clean: CleanModel,
    target: int,
    seed: int,
    images: int = 100,
    check_per_class: int = 10,
    max_passes: int = 50,
) -> UapPattern:
    """The low-passed universal perturbation of ``clean``'s model towards ``target``."""
    ctx = clean.ctx
    train = ctx.data.train
    generator = torch.Generator().manual_seed(seed)
    chosen, check = pick_images(train.targets, images, check_per_class, generator)
    device = ctx.device
    model = clean.model.to(device).float().eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # gradients flow to the input only
    x = train.images[chosen].to(device).float() / 255
    checked = train.images[check].to(device).float() / 255

    def passed(number: int, rate: float) -> None:
        note = f"pass {number}, fooling rate {rate:.3f}"
        report(ambient(), Update("universal perturbation", number, max_passes, note, True))

    result = universal_perturbation(
        model, x, checked, target, generator, max_passes=max_passes, progress=passed
    )
    pattern = (result.pattern.cpu() * 255).round().clamp(0, 255).byte().permute(1, 2, 0)
    return UapPattern(pattern, result.fooling_rates, result.passes)


def npy_bytes(pattern: torch.Tensor) -> bytes:
    buffer = BytesIO()
    np.save(buffer, pattern.numpy(), allow_pickle=False)
    return buffer.getvalue()


def run_pattern(
    cfg: ExperimentConfig, is_regression: bool, train: TrainClean, cache: Path | None = None
) -> RunPattern:
    """The pattern file of ``cfg``'s run (computed into the cache, or read from it); ``train``
    runs the clean config (``run_experiment``)."""
    target = class_target(cfg, is_regression)
    cache = cache_root() if cache is None else cache
    clean_cfg = surrogate_config(cfg)
    clean_key = config_digest(clean_cfg)
    settings = {"target": target, "seed": SURROGATE_SEED, **UAP_SETTINGS, "format": FORMAT}
    canonical = json.dumps({"clean_model": clean_key, **settings}, sort_keys=True)
    key = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    path = cache / PATTERNS / f"{key}.npy"
    side = path.with_suffix(".json")
    # parallel workers: the first computes, the others wait for the lock and read
    with waiting_lock(path.with_suffix(".lock")):
        computed = not (path.is_file() and side.is_file())
        if computed:
            clean = clean_model(clean_cfg, cache, clean_key, train)
            made = uap_pattern(clean, target, SURROGATE_SEED, **UAP_SETTINGS)
            stored = {
                "key": key,
                "clean_model": {
                    "key": clean_key,
                    "seed": SURROGATE_SEED,
                    "epochs": clean_cfg.train.epochs,
                    "clean_acc": clean.clean_acc,
                    "trained_for_this_pattern": clean.trained,
                },
                "settings": settings,
                "fooling_rates": made.fooling_rates,
                "passes": made.passes,
            }
            write_json_atomic(side, stored)  # the record first: the .npy marks the pair done
            write_bytes_atomic(path, npy_bytes(made.pattern))
        stored = read_json(side)
    record = {"pattern": "uap", "source": "computed" if computed else "reused", "path": str(path)}
    return RunPattern(path, {**record, **stored})
