"""The frozen-feature cache: a frozen body's output, computed once per image, shared by runs.

When a freeze policy trains only a tail of the network (``classifier`` or ``head``) and
everything below runs frozen in evaluation mode, the tail's input is a fixed function of
the image. It is computed once for every image of the loaded dataset, stored (float16,
memory-mapped) under a key of the dataset section, the cut point and a digest of the frozen
body's exact weights (fresh weights depend on the seed: each seed gets its own features), and
reused by every run and repeat of a grid that share those weights, and by other processes.
A run then computes features only for the images it changes (poisoned training images, the
triggered test set) and trains the tail on features.

Files are written atomically (features, then the meta file that marks them complete),
checked on load (key, shape, a fingerprint of the images, the features' SHA-256). A cache
made for other images or weights is rebuilt, with a warning; a damaged one (unreadable, or
its features no longer match their checksum) is refused with the files to delete: it is
never trusted, and never silently replaced.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError, DataFormatError
from triggerlab.files import file_digest, waiting_lock, write_bytes_atomic, write_json_atomic
from triggerlab.progress import Reporter, Update, report
from triggerlab.train.devices import model_memory_format, to_input
from triggerlab.train.loop import EVAL_BATCH_SIZE

FORMAT = 1
FINGERPRINT_IMAGES = 64


def cache_root() -> Path:
    """``TRIGGERLAB_CACHE``, else the user cache folder (``XDG_CACHE_HOME`` or ~/.cache)."""
    explicit = os.environ.get("TRIGGERLAB_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "triggerlab"


class _Cut(Exception):
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


@torch.no_grad()
def body_features(
    model: nn.Module, cut: nn.Module, images: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """The input of ``cut`` for uint8 images, the model in evaluation mode, on the CPU.

    The forward pass stops at ``cut``: the tail itself is not computed.
    """

    def stop(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        raise _Cut(inputs[0])

    model.eval()
    layout = model_memory_format(model)
    handle = cut.register_forward_pre_hook(stop)
    parts = []
    try:
        for start in range(0, images.shape[0], EVAL_BATCH_SIZE):
            try:
                model(to_input(images[start : start + EVAL_BATCH_SIZE], device, layout))
            except _Cut as cut_at:
                parts.append(cut_at.value.float().cpu())
    finally:
        handle.remove()
    return torch.cat(parts) if parts else torch.empty(0)


def body_digest(model: nn.Module, tail: nn.Module) -> str:
    """SHA-256 of every tensor of ``model``'s state outside ``tail``: the frozen body's exact
    parameters and buffers (batch-norm statistics included), whatever seed or file made them.

    The tail is left out: it trains, and its input does not depend on it.
    """
    prefix = next(name for name, module in model.named_modules() if module is tail)
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if prefix and (name == prefix or name.startswith(f"{prefix}.")):
            continue
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{data.nbytes};".encode())
        digest.update(data)
    return digest.hexdigest()


def pool_of(parts: Sequence[ImageDataset]) -> int | None:
    """The size of the loaded dataset when ``parts`` cover all of it exactly once, else None."""
    indices = [p.pool_index for p in parts if len(p)]
    if not indices or any(i is None for i in indices):
        return None
    joined = torch.cat(indices)  # type: ignore[arg-type]
    size = int(joined.max()) + 1
    covered = torch.zeros(size, dtype=torch.long)
    covered.index_add_(0, joined, torch.ones_like(joined))
    return size if bool((covered == 1).all()) else None


def fingerprint(parts: Sequence[ImageDataset], size: int) -> str:
    """A hash of the images at evenly spaced pool positions: other images, another cache."""
    wanted = torch.linspace(0, size - 1, min(FINGERPRINT_IMAGES, size)).round().long()
    positions, images = [], []
    for part in parts:
        assert part.pool_index is not None
        hit = torch.isin(part.pool_index, wanted)
        positions.append(part.pool_index[hit])
        images.append(part.images[hit])
    order = torch.argsort(torch.cat(positions))  # the same images in the same order, any split
    digest = hashlib.sha256(str(size).encode())
    digest.update(torch.cat(positions)[order].numpy().tobytes())
    digest.update(torch.cat(images)[order].numpy().tobytes())
    return digest.hexdigest()


@dataclass
class FeatureStore:
    """One cached feature file and what it is for."""

    folder: Path
    key: dict[str, Any]

    @property
    def name(self) -> str:
        canonical = json.dumps(self.key, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def features_path(self) -> Path:
        return self.folder / f"{self.name}.npy"

    @property
    def meta_path(self) -> Path:
        return self.folder / f"{self.name}.json"

    def load(self, size: int, print_: str) -> np.ndarray | None:
        """The cached features, or None (and a warning when something was there but wrong)."""
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            features = np.load(self.features_path, mmap_mode="r")
            digest = file_digest(self.features_path)
        except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty features file
            self._refuse(f"unreadable ({exc or type(exc).__name__})")
        if not isinstance(meta, dict):
            self._refuse(f"{self.meta_path.name} holds a JSON {type(meta).__name__}, not an object")
        checks = {
            "key": meta.get("key") == json.loads(json.dumps(self.key, default=str)),
            "shape": features.shape[0] == size and list(features.shape) == meta.get("shape"),
            "images": meta.get("fingerprint") == print_,
            "checksum": meta.get("sha256") == digest,
        }
        if not checks.pop("checksum"):
            self._refuse("its features do not match their checksum")
        failed = [name for name, ok in checks.items() if not ok]
        return self._distrust(f"{', '.join(failed)} do not match") if failed else features

    def _refuse(self, why: str) -> None:
        raise DataFormatError(
            f"feature cache {self.features_path}: {why} (damaged); delete it and "
            f"{self.meta_path.name} beside it to compute the features again"
        )

    def _distrust(self, why: str) -> None:
        warnings.warn(
            f"feature cache {self.features_path}: {why}; computing it again", stacklevel=3
        )
        return None

    def save(self, features: np.ndarray, print_: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.meta_path.unlink(missing_ok=True)  # the meta file marks a complete cache: last
        buffer = _npy_bytes(features)
        write_bytes_atomic(self.features_path, buffer)
        meta = {
            "format": FORMAT,
            "key": self.key,
            "shape": list(features.shape),
            "dtype": str(features.dtype),
            "fingerprint": print_,
            "sha256": hashlib.sha256(buffer).hexdigest(),
        }
        write_json_atomic(self.meta_path, json.loads(json.dumps(meta, default=str)))

    def building(self) -> contextlib.AbstractContextManager[None]:
        """One process builds a cache at a time; the others wait, then read it."""
        usable_folder(self.folder)
        return waiting_lock(self.folder / f"{self.name}.lock")


def usable_folder(folder: Path) -> None:
    """ConfigError naming the folder when the cache cannot live there (a file, no rights)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != folder else ""
        named = " (under TRIGGERLAB_CACHE)" if os.environ.get("TRIGGERLAB_CACHE") else ""
        raise ConfigError(
            f"feature cache folder {folder}{named}: {exc.strerror or exc}{where}; expected a "
            "folder this user can write in: set TRIGGERLAB_CACHE to one, or "
            "model.feature_cache: false"
        ) from None


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def pool_features(
    store: FeatureStore,
    model: nn.Module,
    cut: nn.Module,
    parts: Sequence[ImageDataset],
    device: torch.device,
    progress: Reporter | None = None,
) -> tuple[np.ndarray, int]:
    """Features of every pooled image, from the cache or computed now; and the forwards done."""
    size = pool_of(parts)
    assert size is not None
    print_ = fingerprint(parts, size)
    with store.building():
        found = store.load(size, print_)
        if found is not None:
            return found, 0
        features: np.ndarray | None = None
        done = 0
        for part in parts:
            for start in range(0, len(part), EVAL_BATCH_SIZE * 4):
                rows = slice(start, start + EVAL_BATCH_SIZE * 4)
                values = body_features(model, cut, part.images[rows], device).numpy()
                if features is None:
                    features = np.zeros((size, *values.shape[1:]), dtype=np.float16)
                features[part.pool_index[rows].numpy()] = values  # type: ignore[index]
                done += values.shape[0]
                report(progress, Update("caching features", done, size))
        assert features is not None
        store.save(features, print_)
        return np.load(store.features_path, mmap_mode="r"), done
