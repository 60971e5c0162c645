"""A defence study's figure: each defence's result beside the model it was given.

A defence grid varies the defence and, usually, one more key with a few values
(the poisoning rate: a clean control at 0 beside the attack). Lines through two
rates say little; per defence, the metric before and after (two points joined, on an
axis zoomed to the data as every accuracy axis) says what each one did.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from triggerlab.analysis.cell_labels import short_labels
from triggerlab.analysis.plots.axes import (
    band_values,
    error_lengths,
    interval_note,
    set_metric_limits,
    sorted_values,
    value_label,
)
from triggerlab.analysis.statistics import interval
from triggerlab.catalogue.metrics import metric_label
from triggerlab.text import wrapped

AFTER = "_after"
MAX_PANELS = 4
BEFORE_COLOUR, AFTER_COLOUR = "#8c96a0", "#1f5fbf"
LEGEND = (("as trained", BEFORE_COLOUR), ("after the defence", AFTER_COLOUR))
SMALL = {"ha": "center", "va": "center", "fontsize": 6, "color": "#555555"}
NOTE_OFFSET = 0.4  # below a row's two points, above the next row's


def defense_figure(runs: pd.DataFrame, varied: list[str], metric: str) -> Figure | None:
    """``metric`` (an ``*_after`` column) beside the same metric of the model as trained:
    one row per defence, 95 % intervals over repeats, one panel per value of the grid's
    other varied key. None when that does not fit: not an ``*_after`` metric, or more
    varied than the defence and one key of at most four values (a line figure then)."""
    before = metric.removesuffix(AFTER)
    others = [k for k in varied if k != "defense"]
    if "defense" not in varied or not metric.endswith(AFTER) or before not in runs:
        return None
    panels = sorted_values(runs[others[0]]) if len(others) == 1 else [None]
    if len(others) > 1 or len(panels) > MAX_PANELS:
        return None
    defenses = sorted_values(runs["defense"])
    size = (2.4 + 3.0 * len(panels), 1.5 + 0.4 * len(defenses))
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    cells: list[dict[str, float]] = []
    for ax, value in zip(axes, panels, strict=True):
        part = runs if value is None else runs[runs[others[0]] == value]
        cells += _panel(ax, part, defenses, before, metric)
        if value is not None:
            ax.set_title(f"{others[0]} = {value}", fontsize=8)
        ax.set_xlabel(value_label(before, runs), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    zoom = set_metric_limits(axes[0], before, band_values(cells), axis="x")
    names = short_labels(defenses)
    axes[0].set_yticks(range(len(defenses)), [names[d] for d in defenses], fontsize=8)
    axes[0].set_ylim(len(defenses) - 0.5, -0.5)  # the config's first defence on top
    handles = [
        Line2D([], [], color=colour, marker="o", linestyle="", label=label)
        for label, colour in LEGEND
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7)
    notes = ", ".join(n for n in (interval_note(cells, before), zoom) if n)
    title = f"{metric_label(before)} as trained and after each defence, {notes}"
    fig.suptitle(wrapped(title, 80), fontsize=9)
    return fig


def _panel(
    ax: Any, runs: pd.DataFrame, defenses: list[Any], before: str, after: str
) -> list[dict[str, float]]:
    """Per defence, the mean before and after with their intervals, joined by a line; a note
    where the defence left no model to measure (a detector, or an inspection that flagged
    nothing) or did so in only some of the runs."""
    cells = []
    for row, defense in enumerate(defenses):
        own = runs[runs["defense"] == defense]
        means = []
        for offset, column, colour in ((-0.15, before, BEFORE_COLOUR), (0.15, after, AFTER_COLOUR)):
            cell = interval(own[column], column)
            if cell["n"] == 0:
                note = "no defence" if set(own.get("defense.kind", [])) == {"none"} else "no repair"
                ax.text(means[0][0] if means else 0.5, row + NOTE_OFFSET, note, **SMALL)
                continue
            cells.append(cell)
            means.append((cell["mean"], row + offset))
            error = error_lengths(cell["mean"], cell["ci_low"], cell["ci_high"])
            ax.errorbar(cell["mean"], row + offset, xerr=error, fmt="o", color=colour, capsize=2)
            if cell["n"] < len(own):
                text = f"repaired in {cell['n']} of {len(own)} runs"
                ax.text(cell["mean"], row + NOTE_OFFSET, text, **SMALL)
        if len(means) == 2:
            (x0, y0), (x1, y1) = means
            ax.plot([x0, x1], [y0, y1], color="#888888", linewidth=1, zorder=0)
    return cells
