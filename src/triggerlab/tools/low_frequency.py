"""``triggerlab triggers lf-pattern``: Zeng et al.'s low-frequency trigger for a config.

The pattern is a universal adversarial perturbation of a *clean* model
(``triggers/universal.py``). The clean model is the config's own network trained on
its data without poisoning or defence, trained once and kept under the cache folder
as a shared training (``run/shared_training.py``, the train-once-defend-many store):
every later pattern for the same data, model and training settings, whatever the
trigger, target or defence, loads it instead of training again.

As BackdoorBench's generator (``resource/lowFrequency/generate_pattern.py:230-269``):
100 random training images, target the config's ``poison.target``. Where it measures
the fooling rate on 10 *test* images per class, triggerlab takes 10 training images per
class outside those 100: an attacker has no test set.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch

from triggerlab.config import ExperimentConfig, override
from triggerlab.errors import ArgumentError, ConfigError
from triggerlab.files import write_bytes_atomic
from triggerlab.grid.plan import training_key
from triggerlab.progress import Update, ambient, report
from triggerlab.run.experiment import run_experiment
from triggerlab.run.prepare import prepare
from triggerlab.run.shared_training import SharedTraining
from triggerlab.triggers.universal import universal_perturbation

CLEAN = "clean_models"


@dataclass(frozen=True)
class LowFrequencyPattern:
    path: Path
    fooling_rates: list[float]
    passes: int
    trained: bool  # the clean model was trained now (False: loaded from the cache)
    key: str
    target: int


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


def clean_model(cfg: ExperimentConfig, cache: Path) -> tuple[torch.nn.Module, object, bool, str]:
    """The trained clean model of ``cfg`` (from the cache, or trained into it), its run
    context, whether it was trained now, and its key."""
    clean = clean_config(cfg)
    key = training_key(clean)
    shared = SharedTraining(cache / CLEAN, key)
    ctx = prepare(clean)
    trained = False
    if shared.load_into(ctx.model) is None:
        run_dir = cache / "clean_runs" / key
        shutil.rmtree(run_dir, ignore_errors=True)  # a run killed before it saved its model
        run_experiment(clean, run_dir, shared=shared)
        trained = True
        if shared.load_into(ctx.model) is None:
            raise ConfigError(f"the clean model of {key} was not saved under {cache / CLEAN}")
    return ctx.model, ctx, trained, key


def pick_images(
    labels: torch.Tensor, count: int, per_class: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random indices, and ``per_class`` others of each class to check the rate."""
    order = torch.randperm(len(labels), generator=generator)
    chosen, rest = order[:count], order[count:]
    check = [rest[labels[rest] == c][:per_class] for c in torch.unique(labels).tolist()]
    return chosen, torch.cat(check)


def generate_lf_pattern(
    cfg: ExperimentConfig,
    out: Path,
    cache: Path,
    images: int = 100,
    check_per_class: int = 10,
    max_passes: int = 50,
) -> LowFrequencyPattern:
    """Write ``out`` (.npy, H x W x C uint8 on 0-255, as BackdoorBench's pattern files) for
    ``trigger: {kind: low_frequency, pattern: uap, path: out}``."""
    if out.suffix != ".npy":
        raise ArgumentError("out", "must end in .npy (a pattern file)", str(out))
    model, ctx, trained, key = clean_model(cfg, cache)
    if ctx.task.is_regression:  # type: ignore[attr-defined]
        raise ConfigError(
            "poison.target: the low-frequency pattern is a perturbation towards a class; "
            "this config's task is regression"
        )
    target = cfg.poison.target  # the clean config's poisoning is reset: the target is cfg's
    if not isinstance(target, int):
        raise ConfigError(f"poison.target: {target} is not a class; expected a class index")
    train = ctx.data.train  # type: ignore[attr-defined]
    generator = torch.Generator().manual_seed(cfg.train.seed)
    chosen, check = pick_images(train.targets, images, check_per_class, generator)
    device = ctx.device  # type: ignore[attr-defined]
    model = model.to(device).float().eval()
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
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = BytesIO()
    np.save(buffer, pattern.numpy(), allow_pickle=False)
    write_bytes_atomic(out, buffer.getvalue())
    return LowFrequencyPattern(out, result.fooling_rates, result.passes, trained, key, target)
