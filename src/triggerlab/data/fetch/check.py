"""``triggerlab data check``: is a copy of a dataset complete and readable?"""

from __future__ import annotations

from pathlib import Path

from triggerlab.data.fetch.sources import source
from triggerlab.errors import ConfigError, DataFormatError


def _probe_mat_files(root: Path) -> str:
    """The normalised MPIIFaceGaze release: each ``pXX.mat`` opens and holds images and labels
    of matching length (read lazily: a full copy is tens of gigabytes)."""
    import h5py

    total = 0
    for path in sorted(root.glob("p[0-9][0-9].mat")):
        try:
            with h5py.File(path, "r") as mat:
                images, labels = mat["Data/data"], mat["Data/label"]
                if images.shape[0] != labels.shape[0]:
                    raise DataFormatError(
                        f"{path}: {images.shape[0]} images but {labels.shape[0]} labels"
                    )
                total += images.shape[0]
        except (OSError, KeyError) as exc:
            raise DataFormatError(f"{path}: not a readable MPIIFaceGaze file ({exc})") from None
    return f"{total} images in the normalised release"


def check_dataset(name: str, root: Path | str) -> str:
    """One line saying what the copy under ``root`` holds; ConfigError when files are missing,
    DataFormatError when one cannot be read (the loader's own checks run on it)."""
    src = source(name)
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    lacking = src.lacking(root)
    if lacking:
        raise ConfigError(f"{name}: {lacking}")
    if name == "mpiifacegaze" and (root / "p00.mat").exists():
        return f"{name}: {_probe_mat_files(root)}"
    from triggerlab.config import DataConfig
    from triggerlab.data.prepare import load_source

    resize = (32, 32) if name == "gtsrb" else None  # its images vary in size
    data = load_source(DataConfig(name=name, root=root, resize=resize))
    parts = [f"{len(data.train)} training images"]
    if data.test is not None:
        parts.append(f"{len(data.test)} test images")
    shape = "x".join(str(v) for v in data.train.images.shape[1:])
    return f"{name}: {', '.join(parts)} of {shape}, readable"
