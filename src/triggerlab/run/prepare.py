"""Preparing a run: load its data, check everything that crosses config sections, build its
model; one place, for a single run and for the grid preflight alike.

A config that validates can still be impossible for its data: a trigger
larger than the image, a target that is not a class, a defence that needs
classes on continuous labels, more poisoned samples than eligible ones, a
model that cannot take the input size. ``check_run`` finds all of these
before anything is written; ``prepare`` returns the run's ``RunContext``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from triggerlab.attack.poison import check_poison_count
from triggerlab.attack.stamping import ModelInputStamping, Stamping, stamping_for
from triggerlab.attack.tasks import ClassificationTask, RegressionTask, Task
from triggerlab.catalogue.defenses import DEFENSE_KINDS
from triggerlab.config import ExperimentConfig, PoisonConfig
from triggerlab.data.binning import bin_split, make_bins
from triggerlab.data.dataset import DataSplit, ImageDataset
from triggerlab.data.prepare import load_source, split_source
from triggerlab.data.transforms import stratified_split
from triggerlab.errors import ConfigError
from triggerlab.models import ModelInfo, build_configured
from triggerlab.run import footprint
from triggerlab.run.context import RunContext
from triggerlab.run.lf_checks import (
    RUN_COPY,
    PatternSource,
    RunPattern,
    check_pattern_run,
    file_record,
    needs_pattern,
    with_pattern,
    without_pattern,
)
from triggerlab.run.rundir import RunDir
from triggerlab.seeds import derive_seeds
from triggerlab.train.devices import Precision, model_memory_format, resolve_device
from triggerlab.triggers import Trigger
from triggerlab.triggers.base import with_training_images


@dataclass(frozen=True)
class CheckedRun:
    """What a run uses: the data (bins as classes for reference 003's variant, the
    defender's share held back), the trigger, and the task with the poisoning as applied."""

    data: DataSplit
    trigger: Trigger
    task: Task
    defender: ImageDataset | None  # clean samples held back for the defence
    stamping: Stamping  # where the trigger is stamped (trigger.stage)

    @property
    def poison(self) -> PoisonConfig:
        return self.task.poison


def validate_poison(cfg: PoisonConfig, num_classes: int) -> None:
    """Check the target and source classes against the dataset's classes."""
    if not isinstance(cfg.target, int):
        raise ConfigError(
            f"poison.target: {cfg.target} is a vector, but this dataset has classes; "
            f"expected a class 0-{num_classes - 1}"
        )
    if not 0 <= cfg.target < num_classes:
        raise ConfigError(
            f"poison.target: class {cfg.target} does not exist; expected 0-{num_classes - 1}"
        )
    bad = [c for c in cfg.source_classes or [] if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"poison.source_classes: {bad} outside the classes 0-{num_classes - 1}")


def validate_regression_poison(
    cfg: PoisonConfig, train_targets: torch.Tensor, names: list[str]
) -> None:
    """The target must have one value per output; a target outside the labels' range only warns.

    Reference 003 discusses why: a target the model never saw is easier to learn
    but easier to notice.
    """
    size = train_targets.shape[1]
    if isinstance(cfg.target, int):
        raise ConfigError(
            f"poison.target: this is a regression dataset; expected a list of {size} values "
            f"({', '.join(names)}) in label units, got the class {cfg.target}"
        )
    if len(cfg.target) != size:
        raise ConfigError(
            f"poison.target: expected {size} values ({', '.join(names)}), got {len(cfg.target)}"
        )
    if cfg.label_mode != "all_to_one" or cfg.source_classes is not None:
        raise ConfigError(
            "poison.label_mode: regression supports all_to_one with every sample eligible "
            "(no source_classes, no clean-label or all-to-all)"
        )
    low, high = train_targets.min(dim=0).values, train_targets.max(dim=0).values
    outside = [
        n
        for n, v, lo, hi in zip(names, cfg.target, low.tolist(), high.tolist(), strict=True)
        if not lo <= v <= hi
    ]
    if outside:
        warnings.warn(
            f"poison.target {cfg.target} lies outside the training labels' range "
            f"for {', '.join(outside)}",
            stacklevel=2,
        )


def make_task(cfg: ExperimentConfig, data: DataSplit) -> Task:
    """The task of a dataset (classes or continuous labels), checked against the config; its
    poisoning has the label mode resolved (``poison.label_mode: paper``)."""
    poison = cfg.poisoning
    if not data.is_regression:
        if cfg.evaluation.bins is not None:
            raise ConfigError(
                "evaluation.bins: the discretisation metric is for regression datasets"
            )
        if cfg.evaluation.tolerances is not None:
            raise ConfigError(
                "evaluation.tolerances: tolerances measure regression errors; this dataset has "
                "classes (set it to null)"
            )
        if cfg.train.loss not in ("auto", "cross_entropy"):
            raise ConfigError(
                f"train.loss: {cfg.train.loss!r} is a regression loss; "
                "classification trains with cross_entropy"
            )
        validate_poison(poison, len(data.class_names))
        return ClassificationTask(poison, data.class_names)
    if cfg.train.loss == "cross_entropy":
        raise ConfigError(
            "train.loss: cross_entropy on continuous labels is reference 003's classification "
            "variant; set evaluation.bins (and evaluation.bin_output) to choose the classes"
        )
    validate_regression_poison(poison, data.train.targets, data.target_names)
    evaluation = cfg.evaluation
    bins = None
    if evaluation.bins is not None:
        bins = make_bins(data, evaluation.bins, evaluation.bin_output, evaluation.bin_range)
    return RegressionTask(
        poison,
        data.labels,
        "mse" if cfg.train.loss == "mse" else "l1",
        evaluation.resolved_tolerances,
        bins,
    )


def setup_task(cfg: ExperimentConfig, data: DataSplit) -> tuple[DataSplit, PoisonConfig, Task]:
    """The data, poisoning and task a run uses.

    Continuous labels trained with ``train.loss: cross_entropy`` are reference
    003's classification variant: the ``evaluation.bins`` of one output become
    the classes and the attacker's target vector becomes its bin, so the
    classification metrics (CA, ASR, RA) measure the attack on the bins.
    """
    evaluation = cfg.evaluation
    if not (data.is_regression and cfg.train.loss == "cross_entropy" and evaluation.bins):
        if data.is_regression and cfg.defense.needs_classes:
            usable = [k for k, spec in DEFENSE_KINDS.items() if not spec.needs_classes]
            raise ConfigError(
                f"defense.kind: {cfg.defense.kind} needs classes, and this dataset has "
                "continuous labels; for regression use a defence that does not "
                f"({', '.join(k for k in usable if k != 'none')})"
            )
        task = make_task(cfg, data)
        return data, task.poison, task
    validate_regression_poison(cfg.poisoning, data.train.targets, data.target_names)
    bins = make_bins(data, evaluation.bins, evaluation.bin_output, evaluation.bin_range)
    target = int(bins.assign(torch.tensor([cfg.poison.target], dtype=torch.float32))[0])
    poison = cfg.poisoning.model_copy(update={"target": target})
    binned = bin_split(data, bins)
    return binned, poison, ClassificationTask(poison, binned.class_names)


def hold_back(
    cfg: ExperimentConfig, data: DataSplit, generator: torch.Generator
) -> tuple[DataSplit, ImageDataset | None]:
    """Set the defender's clean share aside (stratified by class) when its defence uses one."""
    if not cfg.defense.holds_back_data:
        return data, None
    fraction = cfg.defense.held_back_share(len(data.train))  # type: ignore[union-attr]
    try:
        train, defender = stratified_split(data.train, fraction, generator)
    except ValueError as exc:
        raise _held_back_problem(cfg, data.train, exc) from None
    return replace(data, train=train), defender


def _held_back_problem(cfg: ExperimentConfig, train: ImageDataset, exc: ValueError) -> ConfigError:
    """The held-back share is empty (or takes everything), named by the key that set it."""
    samples = cfg.defense.clean_samples  # type: ignore[union-attr]
    if samples is None:
        return ConfigError(f"defense.clean_fraction: {exc}")
    targets = train.targets
    if targets.ndim != 1 or targets.is_floating_point() or 2 * samples > len(train):
        return ConfigError(f"defense.clean_samples: {samples} samples: {exc}")
    # Each class gives round(share x its size): the largest class must give at least one.
    largest = int(torch.bincount(targets).max())
    least = len(train) // (2 * largest) + 1
    return ConfigError(
        f"defense.clean_samples: {samples} held-back samples, set aside from each class in "
        f"proportion, round to none of the {len(train)} training samples; expected at least "
        f"{least}"
    )


def check_augmentation(cfg: ExperimentConfig, data: DataSplit) -> None:
    """Augmentations must leave labels true: a mirrored face looks the other way. A retraining
    defence's own ``augment`` is held to the same."""
    settings = [("train.augment", cfg.train.augment)]
    if getattr(cfg.defense, "augment", None) is not None:
        settings.append(("defense.augment", cfg.defense.augment))  # type: ignore[union-attr]
    for key, operations in settings:
        if data.is_regression and "hflip" in operations:
            raise ConfigError(
                f"{key}: hflip mirrors images but not their continuous labels (a mirrored "
                "face's gaze and head yaw change sign); use [random_crop] for regression"
            )
    height, width = data.shape[1:]
    cropped = any("random_crop" in operations for _, operations in settings)
    if cropped and cfg.train.crop_padding >= min(height, width):
        raise ConfigError(
            f"train.crop_padding: {cfg.train.crop_padding} pixels of padding would let a crop "
            f"miss the {height}x{width} image entirely; expected less than {min(height, width)}"
        )


def check_run(
    cfg: ExperimentConfig, data: DataSplit, defense_seed: int, stamping: Stamping | None = None
) -> CheckedRun:
    """Every check that needs the data, in the order a run meets them. ``stamping``: where
    the trigger is stamped (default: on ``data``'s images, the model's inputs)."""
    stamping = stamping or ModelInputStamping(data.shape)
    # a pattern the run computes (from a clean model) is not there yet: the checks that train
    # nothing build the random one in its place; ``prepare`` builds the real one
    trigger = stamping.build(without_pattern(cfg))
    check_augmentation(cfg, data)
    data, _, task = setup_task(cfg, data)
    check_pattern_run(cfg, data.is_regression)
    data, defender = hold_back(cfg, data, torch.Generator().manual_seed(defense_seed))
    # a trigger drawing from the attacker's training images (Refool's dataset pool)
    trigger = with_training_images(
        trigger, data.train.images, data.train.targets, task.poison.target
    )
    check_poison_count(task, data.train)
    if data.finetune is not None:
        check_poison_count(task, data.finetune, "fine-tuning set")
    return CheckedRun(data, trigger, task, defender, stamping)


def check_model(cfg: ExperimentConfig, data: DataSplit) -> tuple[nn.Module, ModelInfo]:
    """The configured model for this data: weights loaded, adapter and freeze policy applied,
    one dry forward pass on the input size; the defence's parameters checked against it."""
    model, info = build_configured(cfg.model, data.shape, data.num_outputs)
    cfg.defense.check_model(model)
    return model, info


def prepare(cfg: ExperimentConfig, patterns: PatternSource | None = None) -> RunContext:
    """Load data, check it against the config, build the model; ConfigError/DataFormatError on
    bad input. ``patterns`` gives a low-frequency trigger the pattern the run computes
    (``pattern: uap`` without a file), once every check has passed."""
    device = resolve_device(cfg.train.device)
    Precision(cfg.train.precision, device)  # fp16 needs CUDA: refused before anything is written
    footprint.check_before_loading(cfg, device)  # a network too large for the memory
    start = time.perf_counter()
    source = load_source(cfg.data, native=cfg.trigger.stage == "native")
    data = split_source(source, cfg.data, cfg.split_seed)
    stamping = stamping_for(cfg, source, data.shape)
    del source  # the native stage keeps what it needs: the loaded images, in pool order
    load_s = time.perf_counter() - start
    seeds = derive_seeds(cfg.train.seed)
    checked = check_run(cfg, data, seeds["defense"], stamping)
    shape = checked.data.shape
    footprint.check_network(cfg, shape, checked.data.num_outputs, device)
    checked, pattern = with_run_pattern(cfg, checked, patterns)
    torch.manual_seed(seeds["init"])  # weight init and dropout draws; after the pattern's training
    model, info = check_model(cfg, checked.data)
    staged = checked.data.train.images.numel() + 2 * checked.data.test.images.numel()
    footprint.check_training(cfg, model, shape, device, staged)
    layout = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=layout)
    return RunContext(
        cfg=cfg,
        data=checked.data,
        trigger=checked.trigger,
        stamping=checked.stamping,
        task=checked.task,
        defender=checked.defender,
        model=model,
        model_info=info,
        device=device,
        seeds=seeds,
        load_s=load_s,
        trigger_pattern=pattern,
    )


def with_run_pattern(
    cfg: ExperimentConfig, checked: CheckedRun, patterns: PatternSource | None
) -> tuple[CheckedRun, dict[str, Any] | None]:
    """The checked run with the low-frequency pattern it computes, and where that came from."""
    if not needs_pattern(cfg):
        return checked, file_record(cfg)
    if patterns is None:  # never the random stand-in in a run
        raise ConfigError(
            "trigger.path: this low_frequency trigger's pattern (uap, no file) is computed by "
            "a run; give trigger.path or set trigger.pattern: random_smooth"
        )
    start = time.perf_counter()
    pattern = patterns(checked.data.is_regression)
    trigger = checked.stamping.build(with_pattern(cfg, pattern.path))
    record = {**pattern.record, "seconds": round(time.perf_counter() - start, 3)}
    return replace(checked, trigger=trigger), record


def fresh_model(ctx: RunContext) -> nn.Module:
    """The run's model as it was before training: same architecture, same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seeds["init"])
        model, _ = check_model(ctx.cfg, ctx.data)
    return model.to(device=ctx.device, memory_format=model_memory_format(ctx.model))


def rebuild(run_dir: Path, device: str = "cpu") -> RunContext:
    """A finished run as it was after training: its data, trigger, task and trained model
    (the run must have saved its model)."""
    run = RunDir(run_dir)
    cfg = run.read_config([f"train.device={device}"])
    state = run.read_model_state()
    copy = run.path / RUN_COPY  # the pattern the run computed, kept in its folder

    def kept(_: bool) -> RunPattern:
        if not copy.is_file():
            raise ConfigError(f"{run.path}: its low-frequency pattern {RUN_COPY} is missing")
        return RunPattern(copy, {"pattern": "uap", "source": "run folder", "path": str(copy)})

    ctx = prepare(cfg, kept)
    try:
        ctx.model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"{run.path}: its model.safetensors does not fit its config ({exc})"
        ) from None
    ctx.model.eval()
    return ctx
