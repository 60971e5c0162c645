"""Figures of image tensors: one run's samples and confusion matrices, trigger previews and a
defence's reversed triggers, as PNG bytes or files. Figures of a whole grid, drawn from its
results table, are in ``triggerlab.analysis.plots``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from triggerlab.files import write_bytes_atomic
from triggerlab.text import wrapped

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


SEPARATOR = (74, 144, 217)  # the frame of each image
SAMPLE_SIDE = 96  # pixels an image is enlarged to (nearest neighbour), at least
SAMPLE_WIDTH = 116  # pixels of one column, at least: its labels fit


def samples_png(
    clean: torch.Tensor,
    triggered: torch.Tensor,
    labels: Sequence[str],
    clean_pred: Sequence[str],
    triggered_pred: Sequence[str],
    title: str,
) -> bytes:
    """Clean test images above their triggered versions, with labels and predictions.

    Drawn with PIL alone: every run draws it, and matplotlib would add about a second of
    imports to each run of a grid.
    """
    from PIL import Image, ImageDraw

    n, _, height, width = clean.shape
    scale = max(1, -(-SAMPLE_SIDE // max(height, width)))
    side_h, side_w, gap = height * scale, width * scale, max(2, scale)
    column = max(side_w, SAMPLE_WIDTH)
    font = _font(11)
    line = 14
    title_lines = wrapped(title, max(30, (n * (column + gap)) // 7)).splitlines()
    left, top = 64, 14 + line * (len(title_lines) + 2) + gap  # the title, then two label lines
    canvas = Image.new(
        "RGB", (left + n * (column + gap), top + 2 * side_h + 3 * gap + line + 8), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(title_lines):
        draw.text((canvas.width // 2, 4 + k * line), text, fill="black", font=font, anchor="ma")
    # every image framed in the separator's colour, gaps included: a white or black
    # background would hide a trigger at an image's border
    for i in range(n):
        x = left + i * (column + gap) + (column - side_w) // 2
        draw.rectangle(
            (x - gap, top - gap, x + side_w + gap - 1, top + 2 * side_h + 2 * gap - 1),
            fill=SEPARATOR,
        )
    for row, images in enumerate((clean, triggered)):
        y = top + row * (side_h + gap)
        draw.text(
            (4, y + side_h // 2), ("clean", "triggered")[row], fill="black", font=font, anchor="lm"
        )
        for i in range(n):
            x = left + i * (column + gap) + (column - side_w) // 2
            canvas.paste(_pil(images[i]).resize((side_w, side_h), Image.Resampling.NEAREST), (x, y))
    for i in range(n):
        middle = left + i * (column + gap) + column // 2
        above = f"true {labels[i]}\npred {clean_pred[i]}"
        draw.multiline_text(
            (middle, top - gap - 4), above, fill="black", font=font, anchor="md", align="center"
        )
        below = f"triggered: pred {triggered_pred[i]}"
        draw.text(
            (middle, top + 2 * side_h + 2 * gap + 3),
            below,
            fill="black",
            font=_font(10),
            anchor="ma",
        )
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _pil(image: torch.Tensor) -> Any:
    """A uint8 ``[C, H, W]`` image as a PIL image (grey or RGB)."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).convert("RGB")


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable where PIL has FreeType
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


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
    from matplotlib.figure import Figure

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
    from matplotlib.figure import Figure

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
    from matplotlib.figure import Figure

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
    from matplotlib.figure import Figure

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
