"""Biwi Kinect Head Pose: the raw sequences (hpdb/NN) and the preprocessed npz files.

Labels are (yaw, pitch, roll) in degrees. From a pose file's rotation
``R = rows[:3].T``: ``roll = -atan2(R10, R00)``,
``yaw = -atan2(-R20, sqrt(R21^2 + R22^2))``, ``pitch = atan2(R21, R22)``.
Raw sequences keep the person as ``groups`` (sequences 15, 18, 21 and 22 are
people 3, 5, 2 and 7 recorded again), so a split never puts one person on both
sides. The npz files carry no subject ids.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.images import read_images
from triggerlab.data.labels import HEADPOSE_LABELS
from triggerlab.data.textfiles import read_text
from triggerlab.errors import DataFormatError

SAME_PERSON = {15: 3, 18: 5, 21: 2, 22: 7}


def angles_from_rotation(rows: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the 3x3 matrix as written in a pose file."""
    r = rows.T
    roll = -math.atan2(r[1, 0], r[0, 0])
    yaw = -math.atan2(-r[2, 0], math.sqrt(r[2, 1] ** 2 + r[2, 2] ** 2))
    pitch = math.atan2(r[2, 1], r[2, 2])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def read_pose(path: Path) -> tuple[float, float, float]:
    """A ``frame_NNNNN_pose.txt``: three rows of the rotation, a blank line, the head centre."""
    rows = [line.split() for line in read_text(path).splitlines() if line.strip()]
    try:
        matrix = np.array([[float(v) for v in row] for row in rows[:3]])
    except ValueError as exc:
        raise DataFormatError(f"{path}: not a Biwi pose file ({exc})") from None
    if matrix.shape != (3, 3) or len(rows) < 4:
        raise DataFormatError(
            f"{path}: expected 3 rows of 3 numbers, a blank line and the head centre"
        )
    return angles_from_rotation(matrix)


def load_raw(root: Path, size: tuple[int, int] | None) -> ImageDataset:
    base = root / "hpdb" if (root / "hpdb").is_dir() else root
    sequences = sorted(p for p in base.iterdir() if p.is_dir() and p.name.isdigit())
    if not sequences:
        raise DataFormatError(f"{root}: no hpdb/01 ... hpdb/24 sequence folders")
    paths, labels, people = [], [], []
    for folder in sequences:
        for image in sorted(folder.glob("frame_*_rgb.png")):
            pose = image.with_name(image.name.replace("_rgb.png", "_pose.txt"))
            if not pose.exists():
                raise DataFormatError(f"{pose}: missing pose file for {image.name}")
            paths.append(image)
            labels.append(read_pose(pose))
            people.append(SAME_PERSON.get(int(folder.name), int(folder.name)))
    return ImageDataset(
        read_images(paths, size),
        torch.tensor(labels, dtype=torch.float32),
        (),
        {
            "source": str(base),
            "release": "raw",
        },
        labels=HEADPOSE_LABELS,
        groups=torch.tensor(people),
    )


def load_npz(path: Path) -> ImageDataset:
    """``image`` (N, 64, 64, 3) uint8 BGR and ``pose`` (N, 3) degrees [yaw, pitch, roll]."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, pose = archive["image"], archive["pose"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: not a Biwi npz with 'image' and 'pose' ({exc})") from exc
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise DataFormatError(
            f"{path}: 'image' must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    if images.shape[0] == 0:
        raise DataFormatError(f"{path}: holds no images")
    if pose.shape != (images.shape[0], 3):
        raise DataFormatError(f"{path}: 'pose' must be ({images.shape[0]}, 3), got {pose.shape}")
    if not np.issubdtype(pose.dtype, np.number) or np.issubdtype(pose.dtype, np.complexfloating):
        raise DataFormatError(f"{path}: 'pose' must hold numbers (degrees), got {pose.dtype}")
    rgb = torch.from_numpy(np.ascontiguousarray(images[..., ::-1])).permute(0, 3, 1, 2).contiguous()
    return ImageDataset(
        rgb,
        torch.from_numpy(pose.astype(np.float32)),
        (),
        {
            "source": str(path),
            "release": "npz",
        },
        labels=HEADPOSE_LABELS,
    )


def load_biwi(root: Path, size: tuple[int, int] | None = None) -> SourceData:
    """Raw sequences (split later by person), the npz pair (official split) or one npz file."""
    if root.is_file():
        return SourceData(train=load_npz(root))
    if (root / "BIWI_train.npz").is_file() and (root / "BIWI_test.npz").is_file():
        return SourceData(
            train=load_npz(root / "BIWI_train.npz"), test=load_npz(root / "BIWI_test.npz")
        )
    if size is None:
        raise DataFormatError("biwi: raw frames are 640x480; set data.resize (e.g. 64)")
    return SourceData(train=load_raw(root, size))
