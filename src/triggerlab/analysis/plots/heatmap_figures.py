"""Heatmaps of a metric over two varied keys, one panel per combination of the others
(reference 001's rate x size panels per position and colour)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from triggerlab.analysis.plots.axes import (
    axis_label,
    cell_namer,
    metric_range,
    sorted_values,
    value_label,
)
from triggerlab.catalogue.metrics import metric_label

MAX_PANELS = 30  # reference 001's heatmaps: 5 positions x 3 colours = 15 panels


def heatmap_figure(runs: pd.DataFrame, varied: list[str], x: str, y: str, metric: str) -> Figure:
    """Mean ``metric`` over (x, y), one panel per combination of the other varied keys."""
    panel_keys = [k for k in varied if k not in (x, y)]
    panels = (
        list(runs.groupby(panel_keys, sort=False, dropna=False)) if panel_keys else [((), runs)]
    )
    shown_note = ""
    if len(panels) > MAX_PANELS:
        shown_note = f" (first {MAX_PANELS} of {len(panels)} panels)"
    panels = panels[:MAX_PANELS]
    columns = min(len(panels), 5)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(max(3.4 * columns + 1.2, 6.0), 3.0 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).flatten()
    xs, ys = sorted_values(runs[x]), sorted_values(runs[y])
    grids = [_cell_means(group, x, y, xs, ys, metric) for _, group in panels]
    low, high, _ = metric_range(metric, np.concatenate([g.flatten() for g in grids]), pad=False)
    title = cell_namer(runs, panel_keys, pairs=True)
    image = None
    for ax, (key, _), grid in zip(axes, panels, grids, strict=False):
        image = ax.imshow(grid, vmin=low, vmax=high, cmap="viridis", origin="lower", aspect="auto")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if not np.isnan(grid[i, j]):
                    bright = (grid[i, j] - low) / (high - low) > 0.6
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.3g}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if bright else "white",
                    )
        ax.set_xticks(
            range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs], fontsize=7
        )
        ax.set_yticks(range(len(ys)), [str(v) for v in ys], fontsize=7)
        ax.set_xlabel(axis_label(x), fontsize=7)
        ax.set_ylabel(axis_label(y), fontsize=7)
        ax.set_title(title(key) if panel_keys else "", fontsize=8)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if image is not None:
        scale = "0 to 1" if (low, high) == (0.0, 1.0) else "the data's range"
        fig.colorbar(
            image,
            ax=axes[: len(panels)].tolist(),
            # two lines: as one, a single row of panels is shorter than the label
            label=f"{value_label(metric, runs)};\ncolours span {scale}",
            shrink=0.8,
        )
    fig.suptitle(f"{metric_label(metric)}: {x} x {y}{shown_note}", fontsize=10)
    return fig


def _cell_means(group: pd.DataFrame, x: str, y: str, xs: list, ys: list, metric: str) -> np.ndarray:
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, vy in enumerate(ys):
        for j, vx in enumerate(xs):
            cell = group[(group[x] == vx) & (group[y] == vy)][metric].dropna()
            if len(cell):
                grid[i, j] = cell.mean()
    return grid
