"""Checks every loaded dataset passes, whatever its format: no silent garbage reaches training.

A model trained on NaN labels, labels outside the classes, one class only or
no images at all still "finishes", with meaningless metrics. These checks
refuse such data at load time and name the file it came from.
"""

from __future__ import annotations

import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.errors import DataFormatError


def _origin(part: ImageDataset, fallback: str) -> str:
    return str(part.metadata.get("source") or fallback)


def check_part(part: ImageDataset, what: str, fallback: str) -> None:
    """One part (training or test) of a dataset: non-empty, labels well-formed."""
    where = _origin(part, fallback)
    if len(part) == 0:
        raise DataFormatError(f"{where}: the {what} part holds no images")
    targets = part.targets
    if targets.is_floating_point():
        bad = ~torch.isfinite(targets)
        if bad.any():
            row = int(torch.nonzero(bad.any(dim=-1) if bad.ndim > 1 else bad).flatten()[0])
            raise DataFormatError(
                f"{where}: {int(bad.sum())} {what} label value(s) are not finite "
                f"(NaN or infinite), the first in sample {row}"
            )
        return
    if targets.dtype in (torch.bool, torch.uint8) or targets.ndim != 1:
        raise DataFormatError(
            f"{where}: {what} class labels must be integers [N], got {targets.dtype} "
            f"{tuple(targets.shape)}"
        )
    classes = len(part.class_names)
    outside = (targets < 0) | (targets >= classes)
    if outside.any():
        value = int(targets[outside][0])
        raise DataFormatError(
            f"{where}: {what} label {value} is outside the {classes} classes 0-{classes - 1}"
        )


def check_source(source: SourceData, name: str) -> None:
    """Every part of a loaded dataset, and enough classes to learn anything."""
    check_part(source.train, "training", name)
    if source.test is not None:
        check_part(source.test, "test", name)
    train = source.train
    if not train.targets.is_floating_point():
        present = torch.unique(train.targets)
        if present.numel() < 2:
            raise DataFormatError(
                f"{_origin(train, name)}: every training image has the same class "
                f"({train.class_names[int(present[0])]}); classification needs at least two"
            )
