"""Whether a dataset will fit in memory, known before any of it is decoded or resized.

A run holds the training images, their poisoned copy and the triggered test
set at once, so a dataset needs about ``HELD_COPIES`` times its own size.
Refusing early beats dying in the allocator, or meeting the out-of-memory
killer, half-way through.
"""

from __future__ import annotations

import os
from pathlib import Path

from triggerlab.errors import ConfigError

HELD_COPIES = 2.5


def available_bytes() -> int:
    """Memory the system can give this process now: MemAvailable on Linux, or less when a
    container's memory limit (cgroup v2 or v1) leaves less."""
    system = _system_available()
    limited = _cgroup_available()
    return system if limited is None else min(system, limited)


def _system_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# (limit, usage, statistics, the reclaimable page cache's entry in them) of cgroup v2 and v1
_CGROUPS = (
    ("memory.max", "memory.current", "memory.stat", "inactive_file"),
    (
        "memory/memory.limit_in_bytes",
        "memory/memory.usage_in_bytes",
        "memory/memory.stat",
        "total_inactive_file",
    ),
)


def _cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What the container's memory limit still allows (page cache it may reclaim counted as
    free); None without a limit."""
    for limit_file, usage_file, stat_file, cache_key in _CGROUPS:
        try:
            limit_text = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 2**60:
            return None  # no limit (v1 writes a huge number)
        cache = 0
        try:
            for line in (root / stat_file).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == cache_key and value.strip().isdigit():
                    cache = int(value)
        except OSError:
            pass
        return max(0, int(limit_text) - usage + cache)
    return None


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
