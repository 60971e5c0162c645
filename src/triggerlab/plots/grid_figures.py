"""Figures of a grid, from its tidy table: PNG and SVG under ``<grid_dir>/figures/``.

* a metric against one varied parameter with 95 % t-interval bands, one line per
  value of another (e.g. ASR vs poisoning rate per trigger size);
* per-epoch curves of chosen cells (reference 002's "ASR vs epoch");
* heatmaps of rate x size, one panel per (position, colour) (reference 001);
* bars per trigger position;
* the ROC curves of the grid's detectors.

Varied keys a figure does not show are pooled, and the title says which.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from triggerlab.errors import ArgumentError, ConfigError
from triggerlab.files import write_bytes_atomic
from triggerlab.grid.store import run_dir
from triggerlab.metrics import is_fraction, metric_label
from triggerlab.plots.roc_figures import roc_figure
from triggerlab.results import collect, interval, metric_columns
from triggerlab.rundir import read_metrics

AXIS_LABELS = {
    "poison.rate": "poisoning rate (fraction of the training set)",
    "poison.count": "poisoned samples",
    "poison.target": "target class",
    "trigger.size": "trigger size (px, or fraction of the image side)",
    "trigger.position": "trigger position",
    "trigger.color": "trigger colour",
    "trigger.opacity": "trigger opacity",
    "trigger.kind": "trigger kind",
    "trigger.thickness": "thickness (px, or fraction of the side)",
    "trigger.count": "number of lines",
    "trigger.delta": "signal strength delta (fraction of the range)",
    "trigger.frequency": "signal frequency (periods per image)",
    "trigger.shape": "signal shape",
    "model.name": "model",
    "data.name": "dataset",
    "train.epochs": "epochs",
    "train.lr": "learning rate",
}
PREFERRED_X = ("poison.rate", "poison.count", "trigger.size", "trigger.delta", "trigger.opacity")
MAX_LINES = 12
MAX_PANELS = 30  # reference 001's heatmaps: 5 positions x 3 colours = 15 panels


def axis_label(key: str) -> str:
    return AXIS_LABELS.get(key, key)


def is_numeric(series: pd.Series) -> bool:
    values = series.dropna()
    return bool(len(values)) and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values
    )


def _fraction_axis(ax: Any, metric: str) -> None:
    """Rates live in [0, 1]; intervals that reach beyond are cut at the frame, not hidden."""
    if is_fraction(metric):
        ax.set_ylim(-0.02, 1.02)


def _save(fig: Figure, folder: Path, name: str) -> list[Path]:
    paths = []
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=110)
        path = folder / f"{name}.{fmt}"
        write_bytes_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths


def _pooled_note(varied: list[str], shown: list[str]) -> str:
    pooled = [k for k in varied if k not in shown]
    return f" (pooled over {', '.join(pooled)})" if pooled else ""


def interval_note(cells: list[dict[str, float]], metric: str) -> str:
    """What the bands or bars show: a 95 % interval over repeats, or none with one run a cell."""
    if max((c["n"] for c in cells), default=0) <= 1:
        return "one run per cell: no interval"
    method = "logit-scale t" if is_fraction(metric) else "t"
    return f"mean and 95 % CI ({method}, over repeats)"


def _sorted_values(series: pd.Series) -> list[Any]:
    values = list(dict.fromkeys(series.dropna()))
    return sorted(values) if is_numeric(series) else values


def line_figure(
    runs: pd.DataFrame, varied: list[str], x: str, hue: str | None, metric: str
) -> Figure:
    """Mean of ``metric`` against ``x`` with 95 % t-interval bands, one line per ``hue`` value."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    hues = _sorted_values(runs[hue])[:MAX_LINES] if hue else [None]
    numeric_x = is_numeric(runs[x])
    xs = _sorted_values(runs[x])
    every: list[dict[str, float]] = []
    for value in hues:
        part = runs if value is None else runs[runs[hue] == value]
        cells = [interval(part[part[x] == v][metric], metric) for v in xs]
        every += cells
        means = np.array([c["mean"] for c in cells])
        low = np.array([c["ci_low"] for c in cells])
        high = np.array([c["ci_high"] for c in cells])
        positions = np.array(xs, dtype=float) if numeric_x else np.arange(len(xs))
        label = None if value is None else f"{value}"
        (line,) = ax.plot(positions, means, marker="o", label=label)
        ax.fill_between(positions, low, high, alpha=0.2, color=line.get_color(), linewidth=0)
    if not numeric_x:
        ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(metric_label(metric))
    _fraction_axis(ax, metric)
    if hue:
        ax.legend(title=axis_label(hue), fontsize=8, title_fontsize=8)
    ax.grid(alpha=0.3)
    pooled = _pooled_note(varied, [x] + ([hue] if hue else []))
    ax.set_title(
        f"{metric_label(metric)} vs {x}, {interval_note(every, metric)}{pooled}", fontsize=9
    )
    return fig


def epoch_figure(grid_dir: Path, runs: pd.DataFrame, varied: list[str], metric: str) -> Figure:
    """Per-epoch mean of ``metric`` over repeats, one line per cell (the first twelve cells)."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    groups = runs.groupby(varied, sort=False, dropna=False) if varied else [((), runs)]
    for number, (key, group) in enumerate(groups):
        if number == MAX_LINES:
            break
        curves = []
        for identity in group["run_id"]:
            path = run_dir(grid_dir, identity) / "metrics.csv"
            if path.exists():
                curves.append([row[metric] for row in read_metrics(path)])
        if not curves:
            continue
        length = min(len(c) for c in curves)
        mean = np.mean([c[:length] for c in curves], axis=0)
        values = key if isinstance(key, tuple) else (key,)
        label = (
            ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(varied, values, strict=True))
            or "all runs"
        )
        ax.plot(np.arange(1, length + 1), mean, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric_label(metric))
    _fraction_axis(ax, metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{metric_label(metric)} per epoch, mean over repeats", fontsize=9)
    return fig


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
    xs, ys = _sorted_values(runs[x]), _sorted_values(runs[y])
    image = None
    for ax, (key, group) in zip(axes, panels, strict=False):
        grid = np.full((len(ys), len(xs)), np.nan)
        for i, vy in enumerate(ys):
            for j, vx in enumerate(xs):
                cell = group[(group[x] == vx) & (group[y] == vy)][metric].dropna()
                if len(cell):
                    grid[i, j] = cell.mean()
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if not np.isnan(grid[i, j]):
                    shade = "black" if grid[i, j] > 0.6 else "white"
                    ax.text(
                        j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color=shade
                    )
        ax.set_xticks(
            range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs], fontsize=7
        )
        ax.set_yticks(range(len(ys)), [str(v) for v in ys], fontsize=7)
        ax.set_xlabel(axis_label(x), fontsize=7)
        ax.set_ylabel(axis_label(y), fontsize=7)
        values = key if isinstance(key, tuple) else (key,)
        ax.set_title(
            ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(panel_keys, values, strict=True)),
            fontsize=8,
        )
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes[: len(panels)].tolist(), label=metric_label(metric), shrink=0.8)
    fig.suptitle(f"{metric_label(metric)}: {x} x {y}{shown_note}", fontsize=10)
    return fig


def bars_figure(runs: pd.DataFrame, varied: list[str], key: str, metric: str) -> Figure:
    """Mean ``metric`` per value of ``key`` with 95 % t-interval error bars."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    values = _sorted_values(runs[key])
    cells = [interval(runs[runs[key] == v][metric], metric) for v in values]
    means = np.array([c["mean"] for c in cells])
    errors = np.array([[c["mean"] - c["ci_low"], c["ci_high"] - c["mean"]] for c in cells]).T
    ax.bar(range(len(values)), means, yerr=np.nan_to_num(errors), capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=20, fontsize=8)
    ax.set_xlabel(axis_label(key))
    ax.set_ylabel(metric_label(metric))
    _fraction_axis(ax, metric)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(
        f"{metric_label(metric)} per {key}, {interval_note(cells, metric)}"
        f"{_pooled_note(varied, [key])}",
        fontsize=9,
    )
    return fig


def _checked_metrics(
    runs: pd.DataFrame, varied: list[str], metrics: tuple[str, ...] | None, keys: dict[str, Any]
) -> list[str]:
    """The metrics to draw; ArgumentError for an unknown metric or an unvaried axis key."""
    for name, key in keys.items():
        if key is not None and key not in varied:
            raise ArgumentError(
                name,
                f"{key!r} is not varied in this grid; varied keys: {', '.join(varied) or 'none'}",
            )
    if metrics is None:
        metrics = ("asr", "clean_acc") if "asr" in runs else ("attack_error", "clean_error")
    unknown = [m for m in metrics if m not in runs]
    if unknown:
        raise ArgumentError(
            "metric",
            f"unknown metric(s) {', '.join(unknown)}; "
            f"this grid has {', '.join(metric_columns(runs))}",
        )
    return list(metrics)


def _heatmap_axes(ordered: list[str]) -> tuple[str, str]:
    """Rate across and size up when both vary (reference 001), else the first numeric keys."""
    hx = "poison.rate" if "poison.rate" in ordered else ordered[0]
    if "trigger.size" in ordered and hx != "trigger.size":
        return hx, "trigger.size"
    return hx, next(k for k in ordered if k != hx)


def plot_grid(
    grid_dir: Path | str,
    metrics: tuple[str, ...] | None = None,
    x: str | None = None,
    hue: str | None = None,
) -> list[Path]:
    """Draw every figure that fits the grid's varied keys; returns the files written."""
    grid_dir = Path(grid_dir)
    table, varied = collect(grid_dir)
    runs = table[(table["role"] == "grid") & (table["status"] == "complete")]
    if runs.empty:
        raise ConfigError(f"{grid_dir}: no finished runs to plot yet (run its grid first)")
    known = _checked_metrics(runs, varied, metrics, {"x": x, "hue": hue})
    folder = grid_dir / "figures"
    folder.mkdir(exist_ok=True)
    numeric = [k for k in varied if is_numeric(runs[k])]
    ordered = [k for k in PREFERRED_X if k in numeric] + [
        k for k in numeric if k not in PREFERRED_X
    ]
    x = x or (ordered[0] if ordered else (varied[0] if varied else None))
    if hue is None:
        hue = next((k for k in varied if k != x), None)
    paths: list[Path] = []
    for metric in known:
        if x is not None:
            name = f"{metric}_vs_{x}" + (f"_by_{hue}" if hue else "")
            paths += _save(line_figure(runs, varied, x, hue, metric), folder, name)
        paths += _save(epoch_figure(grid_dir, runs, varied, metric), folder, f"{metric}_per_epoch")
        if len(ordered) >= 2:
            hx, hy = _heatmap_axes(ordered)
            figure = heatmap_figure(runs, varied, hx, hy, metric)
            paths += _save(figure, folder, f"{metric}_heatmap_{hx}_x_{hy}")
        if "trigger.position" in varied:
            figure = bars_figure(runs, varied, "trigger.position", metric)
            paths += _save(figure, folder, f"{metric}_by_position")
    roc = roc_figure(grid_dir, runs, varied)
    if roc is not None:
        paths += _save(roc, folder, "detection_roc")
    return paths
