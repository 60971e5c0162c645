"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, available offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from triggerlab.data.dataset import ImageDataset, SourceData


def load_digits(root: Path | None = None, size: tuple[int, int] | None = None) -> SourceData:
    """The UCI optical digits as grey 8x8 images; 16 grey levels scaled to 0-255.

    There is no official test split: the experiment draws a seeded one.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # 1-2 s: only when the digits load

    bunch = sklearn_digits()
    levels = np.asarray(bunch.images, dtype=np.float64)  # values 0..16
    images = np.rint(levels * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    data = ImageDataset(
        images=torch.from_numpy(images),
        targets=torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)),
        class_names=tuple(str(d) for d in range(10)),
        metadata={"source": "sklearn.datasets.load_digits", "original_size": [8, 8]},
    )
    return SourceData(train=data)
