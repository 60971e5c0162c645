"""Figures written into a run directory."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from triggerlab.runio import write_bytes_atomic


def _show(ax, image: torch.Tensor) -> None:
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        ax.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(array, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save_samples(
    path: Path,
    clean: torch.Tensor,
    triggered: torch.Tensor,
    labels: Sequence[str],
    clean_pred: Sequence[str],
    triggered_pred: Sequence[str],
    title: str,
) -> None:
    """Clean test images above their triggered versions, with labels and predictions."""
    n = clean.shape[0]
    fig = Figure(figsize=(1.6 * n, 3.9), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        _show(axes[0, i], clean[i])
        axes[0, i].set_title(f"true {labels[i]}\npred {clean_pred[i]}", fontsize=8)
        _show(axes[1, i], triggered[i])
        axes[1, i].set_title(f"triggered\npred {triggered_pred[i]}", fontsize=8)
    axes[0, 0].set_ylabel("clean")
    axes[1, 0].set_ylabel("triggered")
    fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())
