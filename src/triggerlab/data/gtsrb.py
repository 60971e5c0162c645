"""GTSRB (German Traffic Sign Recognition Benchmark) from the official PPM release."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.images import Box, read_images
from triggerlab.data.textfiles import read_text
from triggerlab.errors import DataFormatError

NUM_CLASSES = 43
COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")


def _read_annotations(
    csv_path: Path, image_dir: Path, need_class: bool
) -> tuple[list[Path], list[Box], list[int]]:
    """Rows of a ``;``-separated GT file: paths, ROI boxes and class ids."""
    text = read_text(csv_path)
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";"))
    except csv.Error as exc:
        raise DataFormatError(f"{csv_path}: not a ';'-separated GT file ({exc})") from None
    required = COLUMNS + (("ClassId",) if need_class else ())
    paths, boxes, labels = [], [], []
    for number, row in enumerate(rows, start=2):
        missing = [c for c in required if row.get(c) in (None, "")]
        if missing:
            raise DataFormatError(
                f"{csv_path}:{number}: missing {', '.join(missing)}; "
                f"expected columns {';'.join(required)}"
            )
        try:
            box = (
                int(row["Roi.X1"]),
                int(row["Roi.Y1"]),
                int(row["Roi.X2"]) + 1,
                int(row["Roi.Y2"]) + 1,
            )
            label = int(row["ClassId"]) if need_class else -1
        except ValueError as exc:
            raise DataFormatError(f"{csv_path}:{number}: {exc}") from exc
        if need_class and not 0 <= label < NUM_CLASSES:
            raise DataFormatError(
                f"{csv_path}:{number}: ClassId {label} outside 0-{NUM_CLASSES - 1}"
            )
        paths.append(image_dir / row["Filename"])
        boxes.append(box)
        labels.append(label)
    return paths, boxes, labels


def _find_test_labels(root: Path) -> Path | None:
    for candidate in (
        root / "GT-final_test.csv",
        root / "Final_Test" / "GT-final_test.csv",
        root / "Final_Test" / "Images" / "GT-final_test.csv",
    ):
        if candidate.is_file():
            return candidate
    return None


def load_gtsrb(
    root: Path, size: tuple[int, int] | None = None, crop_roi: bool = False
) -> SourceData:
    """43 classes from ``Final_Training/Images/000CC/`` and, when labelled, ``Final_Test/Images``.

    Images vary in size, so ``data.resize`` is required; ``crop_roi`` crops each
    image to its annotated sign before resizing. The test labels come from
    ``GT-final_test.csv`` (a separate download), looked for in the root,
    ``Final_Test/`` and ``Final_Test/Images/``; without it use ``data.split: random``.
    """
    if size is None:
        raise DataFormatError("gtsrb: images vary in size; set data.resize (32 is common)")
    train_root = root / "Final_Training" / "Images"
    class_dirs = sorted(p for p in train_root.glob("[0-9]" * 5) if p.is_dir())
    if not class_dirs:
        raise DataFormatError(f"{train_root}: no class folders 00000 ... 00042")
    paths: list[Path] = []
    boxes: list[Box] = []
    labels: list[int] = []
    for class_dir in class_dirs:
        class_id = int(class_dir.name)
        if class_id >= NUM_CLASSES:
            raise DataFormatError(f"{class_dir}: class folder outside 00000-{NUM_CLASSES - 1:05d}")
        gt = class_dir / f"GT-{class_dir.name}.csv"
        p, b, _ = _read_annotations(gt, class_dir, need_class=False)
        paths += p
        boxes += b
        labels += [class_id] * len(p)
    names = tuple(f"class_{i:02d}" for i in range(NUM_CLASSES))
    meta = {"source": str(root), "crop_roi": crop_roi}

    def part(p: list[Path], b: list[Box], y: list[int]) -> ImageDataset:
        images = read_images(p, size, b if crop_roi else None)
        return ImageDataset(images, torch.tensor(y, dtype=torch.int64), names, dict(meta))

    train = part(paths, boxes, labels)
    test_csv = _find_test_labels(root)
    if test_csv is None:
        return SourceData(train=train)
    tp, tb, ty = _read_annotations(test_csv, root / "Final_Test" / "Images", need_class=True)
    return SourceData(train=train, test=part(tp, tb, ty))
