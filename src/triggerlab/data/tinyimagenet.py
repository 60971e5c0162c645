"""TinyImageNet-200 from its extracted folder (JPEG files, 64x64, some greyscale)."""

from __future__ import annotations

from pathlib import Path

import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.images import read_images
from triggerlab.data.textfiles import read_text
from triggerlab.errors import DataFormatError

FOLDER = "tiny-imagenet-200"


def _folder(root: Path) -> Path:
    if (root / FOLDER / "wnids.txt").is_file():
        return root / FOLDER
    if (root / "wnids.txt").is_file():
        return root
    raise DataFormatError(f"{root}: cannot find {FOLDER}/wnids.txt or wnids.txt")


def _class_names(folder: Path, wnids: list[str]) -> tuple[str, ...]:
    """Readable names from words.txt when present, else the wnids themselves."""
    words = folder / "words.txt"
    if not words.is_file():
        return tuple(wnids)
    table = {}
    for line in read_text(words).splitlines():
        wnid, _, text = line.partition("\t")
        table[wnid] = text.split(",")[0].strip() or wnid
    return tuple(table.get(w, w) for w in wnids)


def load_tinyimagenet(root: Path, size: tuple[int, int] | None = None) -> SourceData:
    """200 classes: ``train/<wnid>/images/*.JPEG`` for training, ``val/`` as the test part.

    The label of a class is the line index of its wnid in ``wnids.txt``. The
    official test images carry no labels and are not used.
    """
    folder = _folder(root)
    wnids = [w.strip() for w in read_text(folder / "wnids.txt").splitlines() if w.strip()]
    if not wnids:
        raise DataFormatError(f"{folder / 'wnids.txt'}: lists no classes")
    index = {w: i for i, w in enumerate(wnids)}
    train_paths: list[Path] = []
    train_labels: list[int] = []
    for wnid in wnids:
        files = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        if not files:
            raise DataFormatError(f"{folder / 'train' / wnid / 'images'}: no .JPEG files")
        train_paths += files
        train_labels += [index[wnid]] * len(files)

    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DataFormatError(f"{annotations}: file not found")
    val_paths: list[Path] = []
    val_labels: list[int] = []
    for number, line in enumerate(read_text(annotations).splitlines(), start=1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise DataFormatError(
                f"{annotations}:{number}: expected 'filename<TAB>wnid<TAB>box', "
                f"with a wnid from wnids.txt, got {line!r}"
            )
        val_paths.append(folder / "val" / "images" / fields[0])
        val_labels.append(index[fields[1]])

    names = _class_names(folder, wnids)
    meta = {"source": str(folder), "original_size": [64, 64], "wnids": wnids}

    def part(paths: list[Path], labels: list[int]) -> ImageDataset:
        return ImageDataset(read_images(paths, size), torch.tensor(labels), names, dict(meta))

    return SourceData(train=part(train_paths, train_labels), test=part(val_paths, val_labels))
