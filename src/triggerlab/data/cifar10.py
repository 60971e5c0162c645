"""CIFAR-10 and CIFAR-100 from their python pickle files, read directly and safely."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.errors import DataFormatError

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

# Exactly what the CIFAR pickles need: numpy arrays, and the byte-string codec used
# by Python-2 pickles. Anything else (os.system, eval, ...) is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_pickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR batch: latin1 strings, bytes keys as str, only numpy globals allowed."""
    try:
        with path.open("rb") as fh:
            obj = _RestrictedUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: file not found") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
    ) as exc:
        raise DataFormatError(f"{path}: not a readable CIFAR pickle ({exc})") from exc
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(
    path: Path, num_classes: int, labels_key: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle(path)
    if "data" not in batch or labels_key not in batch:
        raise DataFormatError(
            f"{path}: expected keys 'data' and {labels_key!r}, found {sorted(batch)}"
        )
    data = np.asarray(batch["data"])
    raw = np.asarray(batch[labels_key])
    if raw.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: {labels_key!r} must be integer class ids, got {raw.dtype}")
    labels = raw.astype(np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataFormatError(
            f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise DataFormatError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(
            f"{path}: {labels_key!r} must lie in 0-{num_classes - 1}, "
            f"found {labels.min()}-{labels.max()}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _folder(root: Path) -> Path:
    if (root / FOLDER).is_dir():
        return root / FOLDER
    if (root / "batches.meta").is_file() or (root / "test_batch").is_file():
        return root
    raise DataFormatError(f"{root}: no {FOLDER}/ folder and no CIFAR batches in the folder itself")


def class_names(path: Path, key: str, count: int) -> tuple[str, ...]:
    """The ``count`` class names listed under ``key`` in a meta pickle."""
    meta = read_pickle(path)
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta.get(key, ()))
    if len(names) != count:
        raise DataFormatError(f"{path}: expected {count} {key}, got {len(names)}")
    return names


def load_cifar10(root: Path, size: tuple[int, int] | None = None) -> SourceData:
    """CIFAR-10's official 50,000/10,000 split, ``reshape(-1, 3, 32, 32)`` of each batch.

    Only point this at files you trust: although numpy is the only code the
    unpickler will call, pickles are not a safe exchange format.
    """
    folder = _folder(root)
    names = class_names(folder / "batches.meta", "label_names", 10)

    def part(batch_names: tuple[str, ...]) -> ImageDataset:
        arrays = [_read_batch(folder / name, len(names)) for name in batch_names]
        return ImageDataset(
            images=torch.from_numpy(np.concatenate([a for a, _ in arrays])),
            targets=torch.from_numpy(np.concatenate([b for _, b in arrays])),
            class_names=names,
            metadata={"source": str(folder), "original_size": [32, 32]},
        )

    return SourceData(train=part(TRAIN_BATCHES), test=part(("test_batch",)))


FOLDER_100 = "cifar-100-python"


def load_cifar100(root: Path, size: tuple[int, int] | None = None) -> SourceData:
    """CIFAR-100's official 50,000/10,000 split (``train``, ``test``), its 100 fine labels.

    The same restricted unpickler as CIFAR-10: numpy arrays only.
    """
    folder = root / FOLDER_100 if (root / FOLDER_100).is_dir() else root
    if not (folder / "meta").is_file():
        raise DataFormatError(f"{root}: no {FOLDER_100}/ folder with train, test and meta")
    names = class_names(folder / "meta", "fine_label_names", 100)

    def part(name: str) -> ImageDataset:
        images, labels = _read_batch(folder / name, len(names), "fine_labels")
        return ImageDataset(
            images=torch.from_numpy(images),
            targets=torch.from_numpy(labels),
            class_names=names,
            metadata={"source": str(folder / name), "original_size": [32, 32]},
        )

    return SourceData(train=part("train"), test=part("test"))
