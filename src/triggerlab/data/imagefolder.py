"""A generic folder of images, one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.images import IMAGE_SUFFIXES, read_images
from triggerlab.errors import DataFormatError


def load_imagefolder(root: Path, size: tuple[int, int] | None = None) -> SourceData:
    """``<root>/<class_name>/*.{png,jpg,jpeg,ppm,bmp}``; classes sorted by name, label = rank."""
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataFormatError(
            f"{root}: no images found; expected <root>/<class>/*{{{','.join(IMAGE_SUFFIXES)}}}"
        )
    data = ImageDataset(
        images=read_images(paths, size),
        targets=torch.tensor(labels, dtype=torch.int64),
        class_names=tuple(d.name for d in class_dirs),
        metadata={"source": str(root)},
    )
    return SourceData(train=data)
