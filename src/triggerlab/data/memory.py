"""Whether a dataset will fit in memory, known before any of it is decoded or resized.

A run holds the training images, their poisoned copy and the triggered test
set at once, so a dataset needs about ``HELD_COPIES`` times its own size.
Refusing early beats dying in the allocator, or meeting the out-of-memory
killer, half-way through.
"""

from __future__ import annotations

import os

from triggerlab.errors import ConfigError

HELD_COPIES = 2.5


def available_bytes() -> int:
    """Memory the system can give this process now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gb(count: float) -> str:
    return f"{count / 1024**3:.1f} GB"


def check_fits(images: int, channels: int, height: int, width: int, key: str) -> None:
    """ConfigError naming ``key`` when ``images`` uint8 images of this size cannot be held."""
    size = images * channels * height * width
    needed = HELD_COPIES * size
    available = available_bytes()
    if needed > available:
        raise ConfigError(
            f"{key}: {images:,} images of {channels}x{height}x{width} take {_gb(size)} "
            f"(about {_gb(needed)} while a run holds its poisoned and triggered copies), more "
            f"than the {_gb(available)} of memory available; choose a smaller {key} or fewer "
            "images"
        )
