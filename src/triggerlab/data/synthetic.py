"""The procedural face datasets (``synthetic_gaze``, ``synthetic_headpose``): faces rendered by
``data/faces.py`` with exact labels, drawn from a seed, no files needed."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from triggerlab.data.dataset import ImageDataset, SourceData
from triggerlab.data.faces import Subjects, render
from triggerlab.data.labels import GAZE_LABELS, HEADPOSE_LABELS
from triggerlab.data.memory import check_fits
from triggerlab.errors import ConfigError
from triggerlab.progress import Update, ambient, report

RENDER_CHUNK = 256


def synthetic_faces(
    labels: str = "gaze",
    count: int = 6000,
    subjects: int = 15,
    resolution: int = 64,
    head_yaw: float = 20.0,
    head_pitch: float = 15.0,
    head_roll: float = 5.0,
    gaze_range: float = 25.0,
    seed: int = 0,
) -> ImageDataset:
    """Rendered faces with exact labels, ``count // subjects`` per subject (round robin).

    Head pose angles are drawn uniformly within +- ``head_yaw``/``head_pitch``/
    ``head_roll`` degrees; the gaze within +- ``gaze_range`` degrees of the
    facing direction in pitch and yaw. ``labels="gaze"`` gives (pitch, yaw) of
    the gaze in radians, ``"headpose"`` (yaw, pitch, roll) of the head in degrees.
    ``groups`` holds the subject of each image.
    """
    if labels not in ("gaze", "headpose"):
        raise ConfigError(f"labels must be 'gaze' or 'headpose', got {labels!r}")
    if subjects < 1 or count < subjects:
        raise ConfigError(
            "data.options: need at least one image per subject "
            f"(count {count}, subjects {subjects})"
        )
    if count > 1_000_000:
        raise ConfigError(f"data.options.count: at most 1,000,000 faces, got {count}")
    if resolution < 8:
        raise ConfigError(f"data.resize: {resolution} pixels are too few for a face (at least 8)")
    check_fits(count, 3, resolution, resolution, "data.resize")
    generator = torch.Generator().manual_seed(seed)
    people = Subjects.draw(subjects, generator)
    subject = torch.arange(count) % subjects
    deg = math.pi / 180

    def uniform(limit: float) -> torch.Tensor:
        return (2 * torch.rand(count, generator=generator) - 1) * limit * deg

    pose = torch.stack([uniform(head_yaw), uniform(head_pitch), uniform(head_roll)], dim=1)
    gaze = torch.stack([pose[:, 1] + uniform(gaze_range), pose[:, 0] + uniform(gaze_range)], dim=1)
    chunks = []
    progress, started = ambient(), time.perf_counter()
    for i in range(0, count, RENDER_CHUNK):
        part = slice(i, i + RENDER_CHUNK)
        chunks.append(
            render(
                subject[part], pose[part], gaze[part], people, (resolution, resolution), generator
            )
        )
        done = min(i + RENDER_CHUNK, count)
        last = done == count
        seconds = time.perf_counter() - started
        note = f"rendered {count} synthetic faces at {resolution} px in {seconds:.1f} s"
        report(progress, Update("rendering faces", done, count, note if last else "", last))
    images = torch.cat(chunks)
    targets, described = (gaze, GAZE_LABELS) if labels == "gaze" else (pose / deg, HEADPOSE_LABELS)
    metadata = {"source": "triggerlab procedural faces", "seed": seed, "subjects": subjects}
    return ImageDataset(images, targets.float(), (), metadata, groups=subject, labels=described)


def load_synthetic_gaze(
    root: Path | None = None,
    size: tuple[int, int] | None = None,
    count: int = 6000,
    subjects: int = 15,
    head_yaw: float = 20.0,
    head_pitch: float = 15.0,
    head_roll: float = 5.0,
    gaze_range: float = 25.0,
    seed: int = 0,
) -> SourceData:
    """``synthetic_gaze``: rendered at ``data.resize`` (default 64x64), gaze labels."""
    side = 64 if size is None else size[0]
    data = synthetic_faces(
        "gaze", count, subjects, side, head_yaw, head_pitch, head_roll, gaze_range, seed
    )
    return SourceData(train=data)


def load_synthetic_headpose(
    root: Path | None = None,
    size: tuple[int, int] | None = None,
    count: int = 6000,
    subjects: int = 15,
    head_yaw: float = 60.0,
    head_pitch: float = 40.0,
    head_roll: float = 20.0,
    gaze_range: float = 10.0,
    seed: int = 0,
) -> SourceData:
    """``synthetic_headpose``: wider head rotations, head pose labels in degrees."""
    side = 64 if size is None else size[0]
    data = synthetic_faces(
        "headpose", count, subjects, side, head_yaw, head_pitch, head_roll, gaze_range, seed
    )
    return SourceData(train=data)
