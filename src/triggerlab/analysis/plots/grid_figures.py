"""Figures of a grid, from its tidy table: PNG and SVG under ``<grid_dir>/figures/``.

* a metric against one varied parameter with 95 % t-interval bands, one line per
  value of another (e.g. ASR vs poisoning rate per trigger size);
* per-epoch curves of chosen cells (reference 002's "ASR vs epoch");
* heatmaps of rate x size, one panel per (position, colour) (reference 001);
* bars per trigger position;
* a defence study's result per defence beside the model as trained (``defense_figures``);
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
from matplotlib.ticker import MaxNLocator

from triggerlab.analysis.cell_labels import short_labels
from triggerlab.analysis.lead import lead_metric
from triggerlab.analysis.plots.axes import (
    MAX_CATEGORIES_ON_X,
    MAX_LINES,
    PREFERRED_X,
    add_title_line,
    axis_label,
    band_values,
    cell_namer,
    error_lengths,
    fixed_note,
    interval_note,
    is_numeric,
    nulls_named,
    outside_legend,
    pooled_note,
    set_metric_limits,
    sorted_values,
    split_varied,
    use_many_colours,
    value_label,
)
from triggerlab.analysis.plots.defense_figures import defense_figure
from triggerlab.analysis.plots.frontier_figures import STEALTH_AXES, frontier_figure, success_metric
from triggerlab.analysis.plots.heatmap_figures import heatmap_figure
from triggerlab.analysis.plots.roc_figures import roc_figure
from triggerlab.analysis.results import collect, interval, metric_columns
from triggerlab.catalogue.metrics import is_fraction, metric_label
from triggerlab.errors import ArgumentError, ConfigError
from triggerlab.files import write_bytes_atomic
from triggerlab.grid.store import run_dir
from triggerlab.run.rundir import read_metrics
from triggerlab.text import wrapped


def figure_caption(fig: Figure) -> str:
    """What a figure shows, for the report: its title (first panel's, or the whole figure's)."""
    title = fig.get_suptitle() or (fig.axes[0].get_title() if fig.axes else "")
    return " ".join(title.split())


def _save(fig: Figure, folder: Path, name: str) -> list[Path]:
    """PNG and SVG; each file carries the figure's caption (PNG text chunk / SVG title)."""
    paths = []
    caption = figure_caption(fig)
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=110, metadata={"Title": caption})
        path = folder / f"{name}.{fmt}"
        write_bytes_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths


def line_figure(
    runs: pd.DataFrame, varied: list[str], x: str, hue: str | None, metric: str
) -> Figure:
    """Mean of ``metric`` against ``x`` with 95 % t-interval bands, one line per ``hue`` value."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    hues = sorted_values(runs[hue])[:MAX_LINES] if hue else [None]
    use_many_colours(ax, len(hues))
    hue_names = short_labels(hues)
    numeric_x = is_numeric(runs[x])
    xs = sorted_values(runs[x])
    every: list[dict[str, float]] = []
    for value in hues:
        part = runs if value is None else runs[runs[hue] == value]
        cells = [interval(part[part[x] == v][metric], metric) for v in xs]
        every += cells
        means = np.array([c["mean"] for c in cells])
        low = np.array([c["ci_low"] for c in cells])
        high = np.array([c["ci_high"] for c in cells])
        positions = np.array(xs, dtype=float) if numeric_x else np.arange(len(xs))
        label = None if value is None else hue_names[value]
        (line,) = ax.plot(positions, means, marker="o", label=label)
        ax.fill_between(positions, low, high, alpha=0.2, color=line.get_color(), linewidth=0)
    if not numeric_x:
        names = short_labels(xs)
        ax.set_xticks(np.arange(len(xs)), [names[v] for v in xs], rotation=20, ha="right")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(value_label(metric, runs))
    zoom = set_metric_limits(ax, metric, band_values(every))
    if hue:
        outside_legend(ax, title=axis_label(hue))
    ax.grid(alpha=0.3)
    pooled = pooled_note(varied, [x] + ([hue] if hue else []))
    total = runs[hue].nunique() if hue else 1
    shown = f"first {MAX_LINES} of {total} lines" if total > MAX_LINES else ""
    notes = ", ".join(n for n in (interval_note(every, metric), zoom, shown) if n)
    ax.set_title(f"{metric_label(metric)} vs {x}, {notes}{pooled}", fontsize=9, wrap=True)
    return fig


def epoch_figure(
    grid_dir: Path, runs: pd.DataFrame, varied: list[str], metric: str
) -> Figure | None:
    """Per-epoch mean of ``metric`` over repeats, one line per cell (the first cells, up to
    ``MAX_LINES``); None for a metric the epoch log does not hold."""
    groups = list(runs.groupby(varied, sort=False, dropna=False)) if varied else [((), runs)]
    curves = {}
    cell_name = cell_namer(runs, varied)
    for key, group in groups[:MAX_LINES]:
        paths = [run_dir(grid_dir, i) / "metrics.csv" for i in group["run_id"]]
        rows = [r for r in (read_metrics(p) for p in paths if p.exists()) if r]
        if rows and metric not in rows[0][0]:
            return None  # measured once at the end (a defence's *_after), not per epoch
        if rows:
            length = min(len(r) for r in rows)
            curves[cell_name(key)] = np.mean(
                [[row[metric] for row in r[:length]] for r in rows], axis=0
            )
    longest = max((len(name) for name in curves), default=0)
    fig = Figure(figsize=(4.6 + min(0.055 * longest, 7.0), 4.2), layout="constrained")
    ax = fig.subplots()
    use_many_colours(ax, len(curves))
    for name, mean in curves.items():
        marker = "." if len(mean) < 12 else None
        ax.plot(np.arange(1, len(mean) + 1), mean, label=name, marker=marker)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(value_label(metric, runs))
    zoom = set_metric_limits(ax, metric, [v for m in curves.values() for v in m])
    ax.grid(alpha=0.3)
    outside_legend(ax, title="cell" if len(varied) != 1 else axis_label(varied[0]))
    shown = f", first {MAX_LINES} of {len(groups)} cells" if len(groups) > MAX_LINES else ""
    title = f"{metric_label(metric)} per epoch, mean over repeats{shown}"
    ax.set_title(wrapped(title + (f", {zoom}" if zoom else ""), 60), fontsize=9)
    return fig


def _bar_end(metric: str, cells: list[dict[str, float]]) -> float:
    """Bars start at 0 (their length is the value); a share ends at 1, others past the data."""
    if is_fraction(metric):
        return 1.02
    return 1.1 * max((v for v in band_values(cells) if np.isfinite(v)), default=1.0) or 1.0


def bars_figure(runs: pd.DataFrame, varied: list[str], key: str, metric: str) -> Figure:
    """Mean ``metric`` per value of ``key`` with 95 % interval error bars; horizontal bars
    with short labels when there are many values (a whole trigger varied, for example)."""
    values = sorted_values(runs[key])
    names = short_labels(values)
    horizontal = len(values) > MAX_CATEGORIES_ON_X
    height = max(4.0, 0.28 * len(values) + 1.4) if horizontal else 4.0
    # the bars keep about 4 inches beside labels of any length (7-point text: ~0.06 in a letter)
    longest = max((len(n) for n in names.values()), default=0)
    width = 4.8 + 0.06 * longest if horizontal else 6.4
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    cells = [interval(runs[runs[key] == v][metric], metric) for v in values]
    means = np.array([c["mean"] for c in cells])
    errors = error_lengths(means, [c["ci_low"] for c in cells], [c["ci_high"] for c in cells])
    ticks = [names[v] for v in values]
    if horizontal:
        ax.barh(range(len(values)), means, xerr=errors, capsize=3, color="#4c72b0")
        ax.set_yticks(range(len(values)), ticks, fontsize=7)
        ax.invert_yaxis()  # the grid's first cell on top, as in its config
        ax.set_ylabel(axis_label(key))
        ax.set_xlabel(value_label(metric, runs))
        ax.set_xlim(0, _bar_end(metric, cells))
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.bar(range(len(values)), means, yerr=errors, capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(values)), ticks, rotation=20, fontsize=8, ha="right")
        ax.set_xlabel(axis_label(key))
        ax.set_ylabel(value_label(metric, runs))
        ax.set_ylim(0, _bar_end(metric, cells))
        ax.grid(axis="y", alpha=0.3)
    title = f"{metric_label(metric)} per {key}, {interval_note(cells, metric)}"
    ax.set_title(wrapped(title + pooled_note(varied, [key]), 70), fontsize=9)
    return fig


def _checked_metrics(
    runs: pd.DataFrame,
    varied: list[str],
    fixed: dict[str, Any],
    metrics: tuple[str, ...] | None,
    keys: dict[str, Any],
    lead: str = "asr",
) -> list[str]:
    """The metrics to draw; ArgumentError for an unknown metric or an axis key that does not
    vary (a key of one value is a caption, not an axis)."""
    for name, key in keys.items():
        if key is not None and key not in varied:
            held = f"{key!r} takes one value here ({fixed[key]})" if key in fixed else ""
            raise ArgumentError(
                name,
                f"{held or repr(key) + ' is not varied'} in this grid; "
                f"varied keys: {', '.join(varied) or 'none'}",
            )
    if metrics is None:
        metrics = (lead, "clean_acc") if lead in runs else ("attack_error", "clean_error")
        if "defense" in varied and f"{metrics[0]}_after" in runs:  # what the repairs left
            metrics = tuple(f"{m}_after" for m in metrics)
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
    stealth: str = "psnr_db",
) -> list[Path]:
    """Draw every figure that fits the grid's varied keys; returns the files written."""
    grid_dir = Path(grid_dir)
    if stealth not in STEALTH_AXES:
        raise ArgumentError(
            "stealth", f"expected one of {', '.join(STEALTH_AXES)}, got {stealth!r}"
        )
    table, varied = collect(grid_dir)
    runs = table[(table["role"] == "grid") & (table["status"] == "complete")]
    if runs.empty:
        raise ConfigError(f"{grid_dir}: no finished runs to plot yet (run its grid first)")
    figures = grid_figures(grid_dir, runs, varied, metrics, x, hue, stealth)
    folder = grid_dir / "figures"
    folder.mkdir(exist_ok=True)
    return [path for name, figure in figures for path in _save(figure, folder, name)]


def grid_figures(
    grid_dir: Path,
    runs: pd.DataFrame,
    varied: list[str],
    metrics: tuple[str, ...] | None = None,
    x: str | None = None,
    hue: str | None = None,
    stealth: str = "psnr_db",
) -> list[tuple[str, Figure]]:
    """Every figure that fits the finished ``runs`` of a grid, by file name (no suffix).

    Axes, lines and panels are drawn only for the keys that take more than one value
    among the runs; a key "varied" over a single value (a zip of one rate beside a size
    sweep) is named with its value under each title instead.
    """
    runs = nulls_named(runs, varied)
    varied, fixed = split_varied(runs, varied)
    lead = lead_metric(grid_dir)
    known = _checked_metrics(runs, varied, fixed, metrics, {"x": x, "hue": hue}, lead)
    numeric = [k for k in varied if is_numeric(runs[k])]
    ordered = [k for k in PREFERRED_X if k in numeric] + [
        k for k in numeric if k not in PREFERRED_X
    ]
    x = x or (ordered[0] if ordered else (varied[0] if varied else None))
    if hue is None:
        hue = next((k for k in varied if k != x), None)
    figures: list[tuple[str, Figure]] = []
    for metric in known:
        figures += _metric_figures(grid_dir, runs, varied, metric, x, hue, ordered)
    success = success_metric(runs, lead)
    trigger_varies = any(k == "trigger" or k.startswith("trigger.") for k in varied)
    # a frontier needs a few stealth levels: two (a demo's two patch sizes) show no trade-off
    if trigger_varies and success and stealth in runs and runs[stealth].round(6).nunique() >= 3:
        figure = frontier_figure(runs, varied, stealth, success)
        figures.append((f"frontier_{success}_vs_{stealth}", figure))
    roc = roc_figure(grid_dir, runs, varied)
    if roc is not None:
        figures.append(("detection_roc", roc))
    note = fixed_note(fixed)
    for _, figure in figures:
        add_title_line(figure, note)
    return figures


def _metric_figures(
    grid_dir: Path,
    runs: pd.DataFrame,
    varied: list[str],
    metric: str,
    x: str | None,
    hue: str | None,
    ordered: list[str],
) -> list[tuple[str, Figure]]:
    """One metric's figures: before and after each defence, or against x (lines, or bars
    for categories without a second key); per epoch, heatmaps of two numeric keys, per
    position."""
    figures: list[tuple[str, Figure]] = []
    defended = defense_figure(runs, varied, metric)
    barred = None
    if defended is not None:
        figures.append((f"{metric}_by_defense", defended))
    elif x is not None:
        # categories alone are bars: a line through them would suggest an order between them
        if not is_numeric(runs[x]) and (hue is None or hue == x):
            barred = x
            figures.append((f"{metric}_by_{x}", bars_figure(runs, varied, x, metric)))
        else:
            name = f"{metric}_vs_{x}" + (f"_by_{hue}" if hue else "")
            figures.append((name, line_figure(runs, varied, x, hue, metric)))
    per_epoch = epoch_figure(grid_dir, runs, varied, metric)
    if per_epoch is not None:
        figures.append((f"{metric}_per_epoch", per_epoch))
    if len(ordered) >= 2:
        hx, hy = _heatmap_axes(ordered)
        figure = heatmap_figure(runs, varied, hx, hy, metric)
        figures.append((f"{metric}_heatmap_{hx}_x_{hy}", figure))
    if "trigger.position" in varied and barred != "trigger.position":
        figure = bars_figure(runs, varied, "trigger.position", metric)
        figures.append((f"{metric}_by_position", figure))
    return figures
