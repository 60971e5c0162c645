"""From a validated ``data:`` section to the train/test tensors an experiment uses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from triggerlab.catalogue.datasets import DATASETS
from triggerlab.catalogue.strict import MAX_SEED
from triggerlab.data.dataset import DataSplit, ImageDataset, SourceData
from triggerlab.data.memory import check_fits
from triggerlab.data.protocols import finetune_split, subject_split, subjects_of
from triggerlab.data.transforms import convert_channels, resize_images, stratified_split
from triggerlab.data.validate import check_source
from triggerlab.errors import ConfigError, DataFormatError

if TYPE_CHECKING:
    from triggerlab.config import DataConfig
    from triggerlab.progress import Reporter


def _finish(data: ImageDataset, cfg: DataConfig) -> ImageDataset:
    _, channels, height, width = data.images.shape
    height, width = cfg.resize or (height, width)
    check_fits(len(data), cfg.channels or channels, height, width, "data.resize")
    return data.with_images(model_input_images(data.images, cfg))


def model_input_images(images: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """Loaded uint8 images as the model takes them: resized (``data.resize``), then with the
    channels of ``data.channels``. Clean images and triggers stamped at the native stage go
    through this one function."""
    if cfg.resize is not None:
        images = resize_images(images, cfg.resize)
    if cfg.channels is not None:
        images = convert_channels(images, cfg.channels)
    return images


def prepare_data(cfg: DataConfig, seed: int) -> DataSplit:
    """Load, split (official or seeded stratified), resize and convert channels.

    ``seed`` drives the split when the dataset has no official one or
    ``data.split`` is ``random``.
    """
    return split_source(load_source(cfg), cfg, seed)


def downloaded_root(cfg: DataConfig, progress: Reporter | None = None) -> Path:
    """``data.download``: the root, fetched first when a complete copy is not there."""
    from triggerlab.data.fetch import SOURCES, fetch_dataset

    if cfg.name not in SOURCES or not SOURCES[cfg.name].fetchable:
        can = ", ".join(n for n, s in SOURCES.items() if s.fetchable)
        raise ConfigError(
            f"data.download: {cfg.name!r} cannot be downloaded (datasets that can: {can}); "
            "set data.download: false"
        )
    return fetch_dataset(cfg.name, cfg.root, progress=progress)


def load_source(cfg: DataConfig, native: bool = False) -> SourceData:
    """The loader's output for the ``data`` section, its options checked first.

    ``native``: the images at their stored size, for triggers stamped before ``data.resize``
    (loaders of image files otherwise resize each file as they read it)."""
    info = DATASETS[cfg.name]
    if cfg.download:
        cfg = cfg.model_copy(update={"root": downloaded_root(cfg)})
    if info.needs_root and cfg.root is None:
        raise ConfigError(f"data.root: dataset {cfg.name!r} needs a root folder ({info.layout})")
    accepted = info.options
    unknown = sorted(set(cfg.options) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) or "none"
        raise ConfigError(
            f"data.options: unknown option(s) {', '.join(unknown)} for {cfg.name!r} "
            f"(allowed: {allowed})"
        )
    for key, value in cfg.options.items():
        default = accepted[key]
        expected = type(default) if default is not None else None
        numeric = expected is float and isinstance(value, int) and not isinstance(value, bool)
        if expected in (int, float, bool, str) and not (isinstance(value, expected) or numeric):
            raise ConfigError(
                f"data.options.{key}: expected {expected.__name__} "
                f"(default {default!r}), got {value!r}"
            )
        if key == "seed" and not 0 <= value <= MAX_SEED:  # torch's generators overflow beyond
            raise ConfigError(f"data.options.seed: expected 0 to {MAX_SEED}, got {value}")
    if info.needs_root and not cfg.root.exists():  # type: ignore[union-attr]
        raise ConfigError(f"data.root: {cfg.root} does not exist")
    try:
        source = info.load(root=cfg.root, size=None if native else cfg.resize, **cfg.options)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # The loaders name the file for every problem they know; this catches the rest.
        raise DataFormatError(
            f"{cfg.root or cfg.name}: unreadable {cfg.name} data ({type(exc).__name__}: {exc})"
        ) from None
    except DataFormatError as exc:
        if not native or "differ in size" not in str(exc):
            raise
        # data.resize, which that message suggests, does not help: the stamp comes before it
        raise ConfigError(
            f"trigger.stage: native stamps triggers on {cfg.name}'s images at their stored "
            f"size, and these have no one size ({exc}); use stage: model_input"
        ) from None
    check_source(source, str(cfg.root or cfg.name))
    return source


def split_source(source: SourceData, cfg: DataConfig, seed: int) -> DataSplit:
    """The train/test (and fine-tune) parts of a loaded source, resized and converted."""
    if cfg.split == "official" and source.test is not None:
        if cfg.test_subjects is not None:
            raise ConfigError(
                f"data.test_subjects: {cfg.name!r} has an official train/test split; "
                "set data.split: random to choose the test subjects"
            )
        count = len(source.train)
        train = replace(source.train, pool_index=torch.arange(count))
        test = replace(source.test, pool_index=count + torch.arange(len(source.test)))
        return DataSplit(train=_finish(train, cfg), test=_finish(test, cfg))
    pool = _pooled(source)
    generator = torch.Generator().manual_seed(seed)
    if cfg.split == "pretune_finetune":
        held_out = (
            int(subjects_of(pool, "pretune_finetune")[-1])
            if cfg.test_subjects is None
            else cfg.test_subjects[0]
        )
        pretune, finetune, test = finetune_split(pool, held_out, cfg.finetune_count, generator)
        return DataSplit(
            train=_finish(pretune, cfg), test=_finish(test, cfg), finetune=_finish(finetune, cfg)
        )
    if pool.groups is not None or cfg.test_subjects is not None:
        # Frames of one person are near-duplicates: a frame-wise split would leak them.
        # Without subjects, subject_split says that test_subjects cannot be honoured.
        train, test = subject_split(pool, cfg.test_fraction, generator, cfg.test_subjects)
    else:
        train, test = stratified_split(pool, cfg.test_fraction, generator)
    return DataSplit(train=_finish(train, cfg), test=_finish(test, cfg))


def native_pool(source: SourceData) -> torch.Tensor:
    """The loaded images in the order of the ``pool_index`` that ``split_source`` gives every
    part: row i is the image whose ``pool_index`` is i."""
    return _pooled(source).images


def _pooled(source: SourceData) -> ImageDataset:
    """The training part and any official test part as one pool for a seeded split."""
    if source.test is None:
        return replace(source.train, pool_index=torch.arange(len(source.train)))
    groups = None
    if source.train.groups is not None and source.test.groups is not None:
        groups = torch.cat([source.train.groups, source.test.groups])
    return replace(
        source.train,
        images=torch.cat([source.train.images, source.test.images]),
        targets=torch.cat([source.train.targets, source.test.targets]),
        groups=groups,
        pool_index=torch.arange(len(source.train) + len(source.test)),
    )
