"""Reference 003's discretisation: equal bins over one continuous output.

Used two ways: to score a regression model by the bin it predicts
(``bin_acc``, ``bin_asr``), and for its classification variant, where the bins
of one output become the classes a model is trained on (``bin_split``).
"""

from __future__ import annotations

from dataclasses import replace

from triggerlab.data.bins import Bins
from triggerlab.data.dataset import DataSplit, ImageDataset
from triggerlab.errors import ConfigError


def make_bins(
    data: DataSplit, count: int, output: str | None, value_range: tuple[float, float] | None
) -> Bins:
    """``count`` bins of ``output`` (default: the first), over ``value_range`` or the training
    labels' range."""
    names = data.target_names
    name = output or names[0]
    if name not in names:
        raise ConfigError(
            f"evaluation.bin_output: {name!r} is not an output; expected one of {', '.join(names)}"
        )
    index = names.index(name)
    if value_range is not None:
        low, high = value_range
    else:
        column = data.train.targets[:, index]
        low, high = float(column.min()), float(column.max())
    if not low < high:
        raise ConfigError(
            f"evaluation.bin_range: the training labels of {name} are all {low:g}; "
            "set evaluation.bin_range to [low, high]"
        )
    return Bins(index, name, low, high, count)


def _binned(part: ImageDataset, bins: Bins) -> ImageDataset:
    return replace(
        part, targets=bins.assign(part.targets), class_names=bins.class_names(), bins=bins
    )


def bin_split(data: DataSplit, bins: Bins) -> DataSplit:
    """The same images with one output's bin as the class (reference 003's classification)."""
    finetune = None if data.finetune is None else _binned(data.finetune, bins)
    return DataSplit(_binned(data.train, bins), _binned(data.test, bins), finetune)
