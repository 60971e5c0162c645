"""Subject-wise evaluation protocols for datasets with subjects (``ImageDataset.groups``).

Frames of one person are near-duplicates, so every protocol here splits by
subject, never by frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError


def subjects_of(data: ImageDataset, protocol: str) -> torch.Tensor:
    """The distinct subject ids, or a ConfigError naming the protocol when there are none."""
    if data.groups is None:
        source = data.metadata.get("source", "this dataset")
        raise ConfigError(f"protocol {protocol!r} needs subject ids, and {source} has none")
    return torch.unique(data.groups)


def _where(data: ImageDataset, mask: torch.Tensor) -> ImageDataset:
    return data.subset(torch.nonzero(mask).flatten())


def subject_split(
    data: ImageDataset,
    test_fraction: float = 0.2,
    generator: torch.Generator | None = None,
    test_subjects: Sequence[int] | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """Train/test with whole subjects on each side: the listed ones, or a seeded share of them."""
    subjects = subjects_of(data, "subject split (data.test_subjects)")
    if test_subjects is None:
        count = max(1, round(test_fraction * subjects.numel()))
        if count >= subjects.numel():
            raise ConfigError(f"a test fraction of {test_fraction} leaves no training subject")
        chosen = subjects[torch.randperm(subjects.numel(), generator=generator)[:count]]
    else:
        unknown = sorted(set(test_subjects) - set(subjects.tolist()))
        if unknown:
            raise ConfigError(
                f"test subjects {unknown} do not exist; subjects are {subjects.tolist()}"
            )
        chosen = torch.tensor(list(test_subjects))
    is_test = torch.isin(data.groups, chosen)  # type: ignore[arg-type]
    return _where(data, ~is_test), _where(data, is_test)


def leave_one_subject_out(data: ImageDataset) -> Iterator[tuple[int, ImageDataset, ImageDataset]]:
    """One fold per subject: (subject, all other subjects, that subject)."""
    for subject in subjects_of(data, "leave-one-subject-out").tolist():
        held = data.groups == subject  # type: ignore[operator]
        yield subject, _where(data, ~held), _where(data, held)


def finetune_split(
    data: ImageDataset,
    held_out: int,
    finetune_count: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """Reference 000: pre-tune on every other subject, fine-tune on ``finetune_count`` images
    of ``held_out`` (drawn with the generator), test on its remaining images."""
    subjects = subjects_of(data, "pre-tune / fine-tune")
    if held_out not in subjects.tolist():
        raise ConfigError(
            f"held-out subject {held_out} does not exist; subjects are {subjects.tolist()}"
        )
    own = torch.nonzero(data.groups == held_out).flatten()  # type: ignore[operator]
    if not 0 < finetune_count < own.numel():
        raise ConfigError(
            f"fine-tune count {finetune_count} must be between 1 and {own.numel() - 1} "
            f"(subject {held_out} has {own.numel()} images)"
        )
    order = own[torch.randperm(own.numel(), generator=generator)]
    finetune, test = (
        torch.sort(order[:finetune_count]).values,
        torch.sort(order[finetune_count:]).values,
    )
    return _where(data, data.groups != held_out), data.subset(finetune), data.subset(test)  # type: ignore[operator]
