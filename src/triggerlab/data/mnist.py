"""MNIST (and any dataset in the same IDX layout) read from the original files."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.fetch.sources import IDX_FOLDERS, idx_places
from triggerlab.errors import DataFormatError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
SUBDIRS = IDX_FOLDERS


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (optionally gzipped), checking magic and length."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 4:
        raise DataFormatError(f"{path}: file is {len(raw)} bytes, too short for an IDX header")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise DataFormatError(
            f"{path}: wrong magic number {magic} (0x{magic:08x}); "
            f"expected {expected_magic} (0x{expected_magic:08x})"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise DataFormatError(
            f"{path}: header declares shape {dims} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header}: truncated or corrupted"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx(root: Path, stem: str) -> Path:
    """The file for ``stem`` under root or torchvision's ``MNIST/raw``, gzipped or not (the
    places ``data fetch`` and ``data check`` also accept as complete)."""
    for place in idx_places(stem):
        candidate = root / place
        if candidate.is_file():
            return candidate
    raise DataFormatError(
        f"{root}: cannot find {stem}[.gz] (looked in {', '.join(SUBDIRS)} under the root)"
    )


def _load_part(root: Path, prefix: str, class_names: tuple[str, ...]) -> ImageDataset:
    images_path = find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}"
        )
    if labels.size and labels.max() >= len(class_names):
        raise DataFormatError(
            f"{labels_path}: label {labels.max()} outside 0-{len(class_names) - 1}"
        )
    return ImageDataset(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        targets=torch.from_numpy(labels.astype(np.int64)),
        class_names=class_names,
        metadata={"source": str(images_path), "original_size": list(images.shape[1:])},
    )


def load_mnist(root: Path, size: tuple[int, int] | None = None) -> SourceData:
    """MNIST's official 60,000/10,000 split from the four IDX files."""
    names = tuple(str(d) for d in range(10))
    return SourceData(train=_load_part(root, "train", names), test=_load_part(root, "t10k", names))
