"""MPIIFaceGaze: the normalised release (pXX.mat, HDF5) and the raw release (JPEG + pXX.txt).

Gaze labels are (pitch, yaw) in radians in camera coordinates, with
``v = (-cos p sin y, -sin p, -cos p cos y)``; subject ids (0-14) are kept in
``groups``. The column layout of ``Data/label`` beyond the first four columns
(landmarks) is not confirmed against a primary source: only columns 0-3 are read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.gaze import angles
from triggerlab.data.images import read_images
from triggerlab.data.labels import GAZE_LABELS
from triggerlab.data.memory import check_fits
from triggerlab.data.textfiles import read_text
from triggerlab.data.transforms import resize_images
from triggerlab.errors import DataFormatError

CHUNK = 250


def _subject_id(path: Path) -> int:
    match = re.fullmatch(r"p(\d+)(\.mat|\.txt)?", path.name)
    if match is None:
        raise DataFormatError(f"{path}: expected a subject named pXX")
    return int(match.group(1))


def _image_count(path: Path) -> int:
    """Images in one subject's file, 0 when it cannot tell (the reading reports that file)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            data = handle["Data/data"]
            return int(data.shape[0]) if isinstance(data, h5py.Dataset) and data.ndim else 0
    except (OSError, KeyError):
        return 0


def load_normalized(root: Path, size: tuple[int, int] | None) -> ImageDataset:
    """Every ``pXX.mat`` in ``root``: ``Data/data`` (N, 3, H, W) BGR and ``Data/label`` (N, >=4)."""
    import h5py

    files = sorted(root.glob("p[0-9][0-9].mat"))
    if not files:
        raise DataFormatError(f"{root}: no p00.mat ... p14.mat files")
    if size is None:
        raise DataFormatError(
            "mpiifacegaze: set data.resize (e.g. 224): 45,000 images of 448x448 need 27 GB"
        )
    check_fits(sum(_image_count(path) for path in files), 3, *size, "data.resize")
    images, gaze, subjects = [], [], []
    for path in files:
        try:
            with h5py.File(path, "r") as handle:
                data, label = handle["Data/data"], handle["Data/label"]
                if not isinstance(data, h5py.Dataset) or not isinstance(label, h5py.Dataset):
                    raise DataFormatError(
                        f"{path}: Data/data and Data/label must be arrays, not groups"
                    )
                if data.dtype.kind not in "uif" or label.dtype.kind not in "uif":
                    raise DataFormatError(
                        f"{path}: Data/data and Data/label must hold numbers, got "
                        f"{data.dtype} and {label.dtype}"
                    )
                if data.ndim != 4 or data.shape[1] != 3 or label.ndim != 2 or label.shape[1] < 4:
                    raise DataFormatError(
                        f"{path}: expected Data/data (N, 3, H, W) and Data/label (N, >=4), "
                        f"got {data.shape} and {label.shape}"
                    )
                if data.shape[0] != label.shape[0]:
                    raise DataFormatError(
                        f"{path}: {data.shape[0]} images but {label.shape[0]} labels"
                    )
                for start in range(0, data.shape[0], CHUNK):
                    chunk = torch.from_numpy(
                        np.asarray(data[start : start + CHUNK]).clip(0, 255).astype(np.uint8)
                    )
                    images.append(resize_images(chunk.flip(1), size))  # BGR -> RGB
                gaze.append(np.asarray(label[:, :2], dtype=np.float32))
                bad = ~np.isfinite(gaze[-1]).all(axis=1)
                if bad.any():  # named here: after loading only the folder would be known
                    raise DataFormatError(
                        f"{path}: Data/label holds {int(bad.sum())} gaze label(s) that are not "
                        f"finite (NaN or infinite), the first in row {int(np.argmax(bad))}"
                    )
        except (OSError, KeyError) as exc:
            raise DataFormatError(f"{path}: not a readable MPIIFaceGaze file ({exc})") from exc
        subjects.append(np.full(gaze[-1].shape[0], _subject_id(path)))
    return ImageDataset(
        torch.cat(images),
        torch.from_numpy(np.concatenate(gaze)),
        (),
        {
            "source": str(root),
            "release": "normalized",
        },
        labels=GAZE_LABELS,
        groups=torch.from_numpy(np.concatenate(subjects)).long(),
    )


def gaze_from_vectors(vectors: np.ndarray) -> np.ndarray:
    """(pitch, yaw) in radians ``[N, 2]`` from gaze vectors ``[N, 3]`` (gt - fc)."""
    pitch, yaw = angles(torch.from_numpy(np.asarray(vectors, dtype=np.float64)))
    return torch.stack([pitch, yaw], dim=1).numpy()


def load_raw(root: Path, size: tuple[int, int] | None) -> ImageDataset:
    """``pXX/pXX.txt`` (28 tokens per line) with the images it lists; gaze = gt - fc."""
    folders = sorted(p for p in root.glob("p[0-9][0-9]") if p.is_dir())
    if not folders:
        raise DataFormatError(f"{root}: no p00/ ... p14/ folders")
    if size is None:
        raise DataFormatError("mpiifacegaze: raw frames differ in size; set data.resize")
    paths: list[Path] = []
    vectors: list[list[float]] = []
    subjects: list[int] = []
    for folder in folders:
        table = folder / f"{folder.name}.txt"
        lines = read_text(table).splitlines()
        for number, line in enumerate(lines, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 28:
                raise DataFormatError(f"{table}:{number}: expected 28 tokens, found {len(tokens)}")
            try:
                fc = [float(v) for v in tokens[21:24]]
                gt = [float(v) for v in tokens[24:27]]
            except ValueError as exc:
                raise DataFormatError(f"{table}:{number}: {exc}") from exc
            if not all(math.isfinite(v) for v in fc + gt):
                raise DataFormatError(
                    f"{table}:{number}: the face centre and gaze target (columns 22-27) must be "
                    f"finite numbers, got {' '.join(tokens[21:27])}"
                )
            paths.append(folder / tokens[0])
            vectors.append([g - f for g, f in zip(gt, fc, strict=True)])
            subjects.append(_subject_id(folder))
    gaze = gaze_from_vectors(np.asarray(vectors, dtype=np.float64)).astype(np.float32)
    return ImageDataset(
        read_images(paths, size),
        torch.from_numpy(gaze),
        (),
        {
            "source": str(root),
            "release": "raw",
        },
        labels=GAZE_LABELS,
        groups=torch.tensor(subjects),
    )


def load_mpiifacegaze(root: Path, size: tuple[int, int] | None = None) -> ImageDataset:
    """The normalised release when ``pXX.mat`` files are present, else the raw release."""
    if any(root.glob("p[0-9][0-9].mat")):
        return load_normalized(root, size)
    return load_raw(root, size)


def load_mpiifacegaze_source(root: Path, size: tuple[int, int] | None = None) -> SourceData:
    """Registry entry: every subject in one pool; experiments split it by subject."""
    return SourceData(train=load_mpiifacegaze(root, size))
