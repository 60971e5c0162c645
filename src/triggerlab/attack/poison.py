"""Choosing which training samples to poison, rewriting them, and transforming their labels.

Counts follow the rule ``count = round(rate * N)`` with N the size of the clean
training set, and the count is always reported beside the rate. Python's
``round`` halves to even; 0.5 % of 1,437 samples is 7 (7.185 rounded).
``poison.rounding: down`` truncates instead, ``int(rate * N)``, as the code of
references 001 and 002 does (2 % of 1,437: 28 rather than 29).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError
from triggerlab.triggers import TrainingForms, Trigger, map_uint8, training_forms
from triggerlab.triggers.base import ImageMap

if TYPE_CHECKING:
    from triggerlab.attack.stamping import Stamping
    from triggerlab.attack.tasks import Task
    from triggerlab.config import PoisonConfig


@dataclass(frozen=True)
class PoisonResult:
    """The training set the model sees, and a record of what was poisoned."""

    train: ImageDataset
    indices: torch.Tensor  # positions of poisoned samples in ``train``
    source_indices: torch.Tensor  # the clean samples they were made from
    original_labels: torch.Tensor
    new_labels: torch.Tensor
    # Cover samples (WaNet's noise mode, Adaptive-Blend): triggered, labels kept.
    cover_indices: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    cover_sources: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def count(self) -> int:
        return int(self.indices.numel())

    @property
    def changed(self) -> torch.Tensor:
        """Positions of every image the attack altered: poisoned and cover samples."""
        return torch.cat([self.indices, self.cover_indices]).sort().values

    @property
    def fraction(self) -> float:
        """Poisoned / all samples the model trains on (below the rate in append mode)."""
        return self.count / len(self.train) if len(self.train) else 0.0


def poison_count(cfg: PoisonConfig, train_size: int) -> int:
    if cfg.count is not None:
        return cfg.count
    assert cfg.rate is not None
    if cfg.rounding == "down":
        return int(cfg.rate * train_size)
    return round(cfg.rate * train_size)


def _limiting_key(cfg: PoisonConfig) -> str:
    """The key that asked for more poisoned samples than there are: the source classes when
    they narrow the draw, else the count or rate."""
    if cfg.source_classes is not None:
        return "poison.source_classes"
    return "poison.count" if cfg.count is not None else "poison.rate"


def _sources_note(cfg: PoisonConfig) -> str:
    if cfg.source_classes is None:
        return ""
    note = f" from source classes {cfg.source_classes}"
    if (
        cfg.label_mode == "all_to_one"
        and cfg.sources == "non_target"
        and cfg.target in cfg.source_classes
    ):
        note += f" (the target class {cfg.target} is never a source with sources: non_target)"
    return note


def _too_few_target_images(
    cfg: PoisonConfig, count: int, eligible: int, size: int, where: str
) -> str:
    """Why a clean-label attack cannot poison ``count`` samples, and the two ways out.

    The rate stays a share of the whole training set, as BackdoorBench defines it for its
    clean-label attacks too (utils/backdoor_generate_poison_index.py:54-60, 94), so a rate
    above the target class's share asks for more target images than there are.
    """
    if cfg.count is not None:
        asked, lower = f"poison.count: {count}", f"lower poison.count to at most {eligible}"
    else:
        most = math.floor(eligible / size * 10_000) / 10_000 if size else 0.0
        asked = f"poison.rate: {cfg.rate:g} of the {where} of {size} samples is {count}"
        lower = f"lower poison.rate to at most {most:g} (or set poison.count <= {eligible})"
    return (
        f"{asked} poisoned samples, but label_mode clean_label (the default for the signal "
        f"and reflection kinds: their papers') poisons only images of the target class "
        f"{cfg.target}, and there are {eligible}; {lower}, or set poison.label_mode: "
        "all_to_one for the dirty-label form"
    )


def check_poison_count(
    task: Task, train: ImageDataset, where: str = "training set", cover: float = 0.0
) -> int:
    """The number of samples to poison; ConfigError when fewer samples are eligible, or too
    few are left for ``cover`` cover samples per poisoned one."""
    cfg = task.poison
    count = poison_count(cfg, len(train))
    eligible = int(task.poison_sources(train.targets).sum())
    if count > eligible and cfg.label_mode == "clean_label":
        raise ConfigError(_too_few_target_images(cfg, count, eligible, len(train), where))
    if count > eligible:
        raise ConfigError(
            f"{_limiting_key(cfg)}: {count} poisoned samples requested but only {eligible} are "
            f"eligible under label_mode={cfg.label_mode}{_sources_note(cfg)} (a {where} of "
            f"{len(train)} samples)"
        )
    covers = round(cover * count)
    if covers > len(train) - count:
        raise ConfigError(
            f"trigger: {count} poisoned samples need {covers} cover samples that keep their "
            f"labels, but the {where} has only {len(train) - count} others (lower the poison "
            "rate, or the trigger's cross_ratio or conservatism)"
        )
    return count


def poison_dataset(
    train: ImageDataset,
    task: Task,
    trigger: Trigger,
    generator: torch.Generator,
    where: str = "training set",
    stamping: Stamping | None = None,
) -> PoisonResult:
    """Draw ``count`` samples the task says are eligible, uniformly without replacement, and
    poison them as ``task.poison`` says (``replace`` or ``append``).

    A trigger with cover samples (``training_forms``) then draws ``round(ratio * count)``
    of the other samples, uniformly, and triggers them in its cover form, labels kept.
    ``stamping`` says where the trigger is stamped (default: on ``train``'s images).
    """
    forms = training_forms(trigger)
    count = check_poison_count(task, train, where, forms.cover_ratio)
    candidates = torch.nonzero(task.poison_sources(train.targets)).flatten()
    chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:count]]
    chosen, _ = torch.sort(chosen)
    original = train.targets[chosen]
    new = task.poisoned_labels(original)
    stamp = _stamper(stamping)
    triggered = stamp(forms.payload, train, chosen, generator)
    covered, cover_images = draw_cover(train, forms, chosen, generator, stamping)
    chosen_all = torch.cat([chosen, covered])
    triggered = torch.cat([triggered, cover_images])
    labels = torch.cat([new, train.targets[covered]])
    added = rewrite(train, chosen_all, triggered, labels, task.poison.mode)
    positions = (
        chosen_all
        if task.poison.mode == "replace"
        else len(train) + torch.arange(chosen_all.numel())
    )
    return PoisonResult(
        added,
        positions[:count],
        chosen,
        original,
        new,
        cover_indices=positions[count:],
        cover_sources=covered,
    )


def _stamper(stamping: Stamping | None) -> Callable[..., torch.Tensor]:
    """``stamping.stamp``, or stamping on the given images themselves."""
    if stamping is not None:
        return stamping.stamp

    def on_images(
        apply: ImageMap, data: ImageDataset, rows: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        return map_uint8(apply, data.images[rows], generator)

    return on_images


def draw_cover(
    train: ImageDataset,
    forms: TrainingForms,
    chosen: torch.Tensor,
    generator: torch.Generator,
    stamping: Stamping | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cover samples' positions (sorted) and their triggered images: ``round(ratio *
    count)`` of the samples not poisoned, drawn uniformly; none for a plain trigger."""
    if forms.cover is None:
        return torch.zeros(0, dtype=torch.long), train.images[:0]
    others = torch.nonzero(~torch.isin(torch.arange(len(train)), chosen)).flatten()
    count = round(forms.cover_ratio * chosen.numel())
    covered = others[torch.randperm(others.numel(), generator=generator)[:count]].sort().values
    return covered, _stamper(stamping)(forms.cover, train, covered, generator)


def rewrite(
    train: ImageDataset,
    chosen: torch.Tensor,
    triggered: torch.Tensor,
    labels: torch.Tensor,
    mode: str,
) -> ImageDataset:
    """The training set with ``chosen`` samples' triggered images and labels in place
    (``replace``) or appended as copies (``append``)."""
    if mode == "replace":
        images = train.images.clone()
        targets = train.targets.clone()
        images[chosen] = triggered
        targets[chosen] = labels
        return replace(train, images=images, targets=targets)
    groups = None if train.groups is None else torch.cat([train.groups, train.groups[chosen]])
    pool = train.pool_index
    if pool is not None:
        pool = torch.cat([pool, pool[chosen]])  # a copy of a pooled image, triggered
    return replace(
        train,
        images=torch.cat([train.images, triggered]),
        targets=torch.cat([train.targets, labels]),
        groups=groups,
        pool_index=pool,
    )
