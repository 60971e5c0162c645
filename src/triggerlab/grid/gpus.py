"""Several runs per GPU: a grid's ``gpus_per_run = F`` puts ``floor(1 / F)`` runs on each GPU.

Small models leave a big GPU mostly idle, so a grid can share one among several runs.
The local executor starts that many worker processes per GPU and pins each worker to
one GPU (through ``CUDA_VISIBLE_DEVICES``, set before the worker starts CUDA); the Ray
executor asks for ``F`` GPUs per task and lets Ray place the tasks. GPU memory is not
partitioned: the runs sharing a GPU must fit in it together.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Literal

from triggerlab.errors import ArgumentError

VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class GpuShare:
    """``fraction`` of a GPU per run, over ``devices`` GPUs (0: Ray decides where they are)."""

    fraction: float
    devices: int

    @property
    def runs_per_gpu(self) -> int:
        return max(1, math.floor(1 / self.fraction + 1e-9))

    @property
    def slots(self) -> int:
        """Runs that fit at once on this machine's GPUs."""
        return self.runs_per_gpu * self.devices


def gpu_share(fraction: float | None, executor: Literal["local", "ray"]) -> GpuShare | None:
    """The requested sharing, checked: a fraction in (0, 1], and (locally) a CUDA GPU."""
    if fraction is None:
        return None
    if not 0 < fraction <= 1:
        raise ArgumentError(
            "gpus_per_run",
            f"expected a fraction of one GPU in (0, 1], e.g. 0.25 for four runs per GPU; "
            f"got {fraction}",
        )
    if executor == "ray":  # the cluster's GPUs are checked once Ray is connected
        return GpuShare(fraction, 0)
    import torch

    if not torch.cuda.is_available():
        raise ArgumentError(
            "gpus_per_run",
            "this machine has no CUDA GPU to share (torch.cuda.is_available() is False); "
            "on CPU, runs share the cores among the workers",
        )
    return GpuShare(fraction, torch.cuda.device_count())


def local_workers(share: GpuShare | None, workers: int | None) -> int:
    """Worker processes: as asked, else one per GPU slot (else one); never more than fit."""
    if share is None:
        return 1 if workers is None else workers
    if workers is None:
        return share.slots
    if workers > share.slots:
        raise ArgumentError(
            "workers",
            f"{workers} workers do not fit: {share.fraction} of a GPU per run puts "
            f"{share.runs_per_gpu} runs on each of {share.devices} GPU(s), {share.slots} at most",
        )
    return workers


def device_ids(share: GpuShare) -> list[str]:
    """The GPUs workers are pinned to, as ``CUDA_VISIBLE_DEVICES`` names them."""
    visible = [v.strip() for v in os.environ.get(VISIBLE, "").split(",") if v.strip()]
    return visible[: share.devices] if visible else [str(i) for i in range(share.devices)]


def pin_worker(counter: Synchronized[int], ids: list[str]) -> str:
    """Give this worker process the next of ``ids`` in turn, and return it.

    Runs in the worker before it touches CUDA, so that ``cuda`` in the worker then means
    that one GPU: workers are pinned round robin, ``runs_per_gpu`` to each GPU.
    """
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    chosen = ids[index % len(ids)]
    os.environ[VISIBLE] = chosen
    return chosen
