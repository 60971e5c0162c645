"""Figures of image tensors: one run's samples and confusion matrices, trigger previews and a
defence's reversed triggers, as PNG bytes or files. Figures of a whole grid, drawn from its
results table, are in ``triggerlab.analysis.plots``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from triggerlab.files import write_bytes_atomic
from triggerlab.text import wrapped


def _show(ax, image: torch.Tensor) -> None:
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        ax.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(array, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def mosaic(rows: Sequence[torch.Tensor], gap: int = 2) -> torch.Tensor:
    """uint8 image rows ``[n, C, H, W]`` tiled into one ``[C, H', W']`` image with white gaps."""
    n, channels, height, width = rows[0].shape
    out = torch.full(
        (channels, len(rows) * (height + gap) - gap, n * (width + gap) - gap),
        255,
        dtype=torch.uint8,
    )
    for r, images in enumerate(rows):
        for i in range(n):
            top, left = r * (height + gap), i * (width + gap)
            out[:, top : top + height, left : left + width] = images[i]
    return out


def samples_png(
    clean: torch.Tensor,
    triggered: torch.Tensor,
    labels: Sequence[str],
    clean_pred: Sequence[str],
    triggered_pred: Sequence[str],
    title: str,
) -> bytes:
    """Clean test images above their triggered versions, with labels and predictions.

    One mosaic in one axes: a figure per run must stay cheap inside large grids.
    """
    n, _, height, width = clean.shape
    gap = max(1, width // 8)
    fig = Figure(figsize=(1.5 * n, 3.9))
    ax = fig.add_axes((0.07, 0.02, 0.92, 0.78))
    _show(ax, mosaic([clean, triggered], gap))
    # Coloured separators: a white or black gap would hide triggers at the image borders.
    for i in range(1, n):
        ax.axvspan(i * (width + gap) - gap - 0.5, i * (width + gap) - 0.5, color="#4a90d9", lw=0)
    ax.axhspan(height - 0.5, height + gap - 0.5, color="#4a90d9", lw=0)
    for i in range(n):
        x = i * (width + gap) + width / 2
        ax.text(
            x, -1, f"true {labels[i]}\npred {clean_pred[i]}", ha="center", va="bottom", fontsize=8
        )
        ax.text(
            x,
            2 * height + gap,
            f"triggered: pred {triggered_pred[i]}",
            ha="center",
            va="top",
            fontsize=7,
        )
    ax.set_yticks([height / 2, height + gap + height / 2], ["clean", "triggered"])
    fig.suptitle(title, fontsize=9)
    return png_bytes(fig)


def residual(clean: torch.Tensor, triggered: torch.Tensor) -> torch.Tensor:
    """``|x' - x|`` of uint8 images stretched to 0-255 per image, so faint signals show."""
    diff = (triggered.float() - clean.float()).abs()
    peak = diff.flatten(1).amax(dim=1).clamp_min(1.0).view(-1, 1, 1, 1)
    return (diff / peak * 255.0).round().byte()


PREVIEW_CHARS = 72  # characters of 9-point text across the 5.4-inch preview


def save_trigger_preview(
    path: Path, clean: torch.Tensor, triggered: torch.Tensor, title: str, caption: str
) -> None:
    """One row per image: clean, triggered, and the residual amplified to full range."""
    _save_png(trigger_preview_figure(clean, triggered, title, caption), path)


def trigger_preview_figure(
    clean: torch.Tensor, triggered: torch.Tensor, title: str, caption: str
) -> Figure:
    """The preview; title and caption wrapped to the figure's width (a spec can be long)."""
    n = clean.shape[0]
    amplified = residual(clean, triggered)
    fig = Figure(figsize=(5.4, 1.75 * n + 0.9), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        for j, image in enumerate((clean[i], triggered[i], amplified[i])):
            _show(axes[i, j], image)
    for j, name in enumerate(("clean", "triggered", "residual (amplified)")):
        axes[0, j].set_title(name, fontsize=9)
    fig.suptitle(wrapped(title, PREVIEW_CHARS), fontsize=9)
    fig.supxlabel(wrapped(caption, PREVIEW_CHARS + 8), fontsize=8)
    return fig


def save_catalogue(path: Path, clean: torch.Tensor, triggered: dict[str, torch.Tensor]) -> None:
    """One image under every trigger: clean first, then one panel per trigger label."""
    n = len(triggered) + 1
    columns = min(n, 6)
    rows = -(-n // columns)
    fig = Figure(figsize=(1.9 * columns, 2.1 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax, (label, image) in zip(axes, [("clean", clean), *triggered.items()], strict=False):
        _show(ax, image)
        ax.set_title(label, fontsize=8)
    for ax in axes[n:]:
        ax.set_axis_off()
    _save_png(fig, path)


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _save_png(fig: Figure, path: Path) -> None:
    write_bytes_atomic(path, png_bytes(fig))


def confusions_png(matrices: dict[str, torch.Tensor], name: str) -> bytes:
    """Row-normalised confusion matrices side by side (reference 003's Figures 5 and 7)."""
    fig = Figure(figsize=(4.2 * len(matrices), 4.0), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (which, matrix) in zip(axes, matrices.items(), strict=True):
        shares = matrix.double() / matrix.sum(dim=1, keepdim=True).clamp_min(1)
        image = ax.imshow(shares.numpy(), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"{which} test images", fontsize=9)
        ax.set_xlabel(f"predicted bin of {name}")
        ax.set_ylabel(f"true bin of {name}")
        for (i, j), value in np.ndenumerate(matrix.numpy()):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=list(axes), label="share of the true bin", shrink=0.8)
    return png_bytes(fig)


def reversed_triggers_png(
    triggers: Sequence[object], indices: Sequence[float], names: Sequence[str]
) -> bytes:
    """Each class's reversed trigger (mask x pattern) with its L1 norm and anomaly index."""
    fig = Figure(figsize=(1.7 * len(triggers), 2.3), layout="constrained")
    axes = fig.subplots(1, len(triggers), squeeze=False)[0]
    for ax, trigger, index, name in zip(axes, triggers, indices, names, strict=True):
        stamp = (trigger.mask * trigger.pattern).clamp(0, 1)  # type: ignore[attr-defined]
        _show(ax, (stamp * 255).round().byte())
        verdict = f"AI {index:.1f}" if getattr(trigger, "reached", True) else "not reached"
        ax.set_title(f"{name}\nL1 {trigger.l1:.1f}  {verdict}", fontsize=7)  # type: ignore[attr-defined]
    fig.suptitle(
        "Neural Cleanse: reversed trigger per class (L1: mask size in pixels; AI: anomaly "
        "index; not reached: the search never hit the success threshold)",
        fontsize=8,
    )
    return png_bytes(fig)
