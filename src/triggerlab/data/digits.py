"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, available offline."""

from __future__ import annotations

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
    from sklearn.datasets import load_digits as sklearn_digits  # 1-2 s: only when the digits load

    bunch = sklearn_digits()
    levels = np.asarray(bunch.images, dtype=np.float64)  # values 0..16
    images = np.rint(levels * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    stored = torch.from_numpy(images)
    if stored_size != NATIVE_SIDE:
        stored = resize_images(stored, (stored_size, stored_size))
    data = ImageDataset(
        images=stored,
        targets=torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)),
        class_names=tuple(str(d) for d in range(10)),
        metadata={"source": "sklearn.datasets.load_digits", "original_size": [8, 8]},
    )
    return SourceData(train=data)
