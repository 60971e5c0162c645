"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, available offline."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.transforms import resize_images
from triggerlab.errors import ConfigError

NATIVE_SIDE = 8
LARGEST_STORED = 512


def load_digits(
    root: Path | None = None, size: tuple[int, int] | None = None, stored_size: int = NATIVE_SIDE
) -> SourceData:
    """The UCI optical digits as grey 8x8 images; 16 grey levels scaled to 0-255.

    ``stored_size`` upsamples them once, at load, to stand in for a dataset stored at that
    side (28: MNIST, 32: CIFAR-10): a trigger with ``stage: native`` is then stamped at
    that size, as reference 001's code stamps MNIST at 28 before upsampling to 64.
    There is no official test split: the experiment draws a seeded one.
    """
    if not NATIVE_SIDE <= stored_size <= LARGEST_STORED:
        raise ConfigError(
            f"data.options.stored_size: expected {NATIVE_SIDE} (the digits' own side) to "
            f"{LARGEST_STORED} pixels, got {stored_size}"
        )
    levels, targets = _digits_table()
    images = np.rint(levels * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    stored = torch.from_numpy(images)
    if stored_size != NATIVE_SIDE:
        stored = resize_images(stored, (stored_size, stored_size))
    data = ImageDataset(
        images=stored,
        targets=torch.from_numpy(targets),
        class_names=tuple(str(d) for d in range(10)),
        metadata={"source": "sklearn.datasets.load_digits", "original_size": [8, 8]},
    )
    return SourceData(train=data)


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 grey levels (0-16, float64) and the classes of the 1,797 digits.

    Read from the CSV scikit-learn ships (what ``sklearn.datasets.load_digits`` reads), found
    without importing scikit-learn: importing it takes 1-3 s, more than the rest of a small
    run's fixed cost. Where the file is not found, scikit-learn's loader reads it.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as file:
                table = np.loadtxt(file, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
