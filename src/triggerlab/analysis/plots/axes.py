"""What every grid figure shares: axis names, units, value ordering, interval notes, limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps

from triggerlab.analysis.cell_labels import short_labels
from triggerlab.catalogue.metrics import is_fraction, metric_text
from triggerlab.text import wrapped

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
MAX_LINES = 14  # the catalogue has fourteen trigger kinds and thirteen defences
MAX_CATEGORIES_ON_X = 6  # more categories than this read better as horizontal bars


def axis_label(key: str) -> str:
    return AXIS_LABELS.get(key, key)


def is_numeric(series: pd.Series) -> bool:
    values = series.dropna()
    return bool(len(values)) and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values
    )


def metric_range(metric: str, values: Any, pad: bool = True) -> tuple[float, float, bool]:
    """Axis or colour limits for ``values`` of ``metric``, and whether they were zoomed.

    A share spanning half its range or more keeps [0, 1]; a narrower one is zoomed to
    its data (0.96 against 0.98 must show), kept inside [0, 1]. Other metrics get their
    data's range (a clean error of 19.8 degrees must not top a 0-1 scale). ``pad``
    leaves room around the data on an axis (from 0 when all values are positive); a
    colour scale spans the data exactly.
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (0.0, 1.0, not is_fraction(metric))
    low, high = float(finite.min()), float(finite.max())
    if is_fraction(metric) and high - low >= 0.5:
        return (-0.02, 1.02, False) if pad else (0.0, 1.0, False)
    if not pad:
        spread = 0.5 * max(abs(low), 1e-3) if high == low else 0.0
        return low - spread, high + spread, True
    if is_fraction(metric):
        margin = max(0.15 * (high - low), 0.02)
        return max(low - margin, -0.005), min(high + margin, 1.005), True
    margin = max(0.1 * (high - low), 0.05 * max(abs(high), 1e-9))
    bottom = 0.0 if low >= 0 and low - margin < 0 else low - margin
    return bottom, high + margin, True


def band_values(cells: list[dict[str, float]]) -> list[float]:
    """What the value axis must show: the means, and the bands when n >= 3 (two runs give
    a t factor of 12.7, whose bands would flatten every line; they are cut at the frame)."""
    values = [c["mean"] for c in cells]
    for c in cells:
        if c["n"] >= 3:
            values += [c["ci_low"], c["ci_high"]]
    return values


def error_lengths(mean: Any, low: Any, high: Any) -> np.ndarray:
    """``[below, above]`` lengths of error bars (``xerr``/``yerr``, shape ``[2, n]``) from
    means and interval ends; none (0) where a cell has no interval."""
    lengths = np.stack(
        [np.atleast_1d(np.subtract(mean, low)), np.atleast_1d(np.subtract(high, mean))]
    )
    return np.clip(np.nan_to_num(lengths.astype(float)), 0, None)


def outside_legend(ax: Any, **options: Any) -> None:
    """A legend right of the axes, where it covers no line, band or point."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title_fontsize=7, **options)


def set_metric_limits(ax: Any, metric: str, values: Any, axis: str = "y") -> str:
    """Set the value axis from the data; returns the note for the title ('' when not zoomed)."""
    low, high, zoomed = metric_range(metric, values)
    (ax.set_ylim if axis == "y" else ax.set_xlim)(low, high)
    return "axis zoomed to the data" if zoomed and is_fraction(metric) else ""


def value_label(name: str, runs: pd.DataFrame | None = None) -> str:
    """A metric's axis label with its unit; a regression error takes the runs' label unit."""
    label_unit = None
    if runs is not None and "label_unit" in runs:
        units = runs["label_unit"].dropna().unique()
        label_unit = str(units[0]) if len(units) == 1 else None
    return metric_text(name, label_unit)


def split_varied(runs: pd.DataFrame, varied: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The keys that take more than one value among ``runs`` (axes, lines, panels), and the
    single value of each other one (a caption): one x value makes no axis."""
    shown = [k for k in varied if runs[k].nunique(dropna=False) > 1]
    fixed = {k: runs[k].iloc[0] for k in varied if k not in shown and len(runs)}
    return shown, fixed


def nulls_named(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``runs`` with a setting left null shown as the value ``null``, as the tables print it:
    a gap would drop its runs from every axis, line and bar."""
    named = runs.copy()
    for key in keys:
        column = named[key]
        if column.isna().any():
            named[key] = column.astype(object).where(column.notna(), "null")
    return named


def fixed_note(fixed: dict[str, Any]) -> str:
    """``poison.rate = 0.05 in every run``: the settings a grid names but does not vary."""
    if not fixed:
        return ""
    # the whole value: with nothing to tell it apart from, a short label would drop its knobs
    shown = (f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in fixed.items())
    return ", ".join(shown) + " in every run"


def add_title_line(fig: Any, note: str) -> None:
    """``note`` on a line of its own under the figure's title, which the report's caption
    repeats: the figure's suptitle when it has one, else its first panel's title."""
    if not note:
        return
    line = wrapped(note, 80)
    if fig.get_suptitle():
        title = next(t for t in fig.texts if t.get_text() == fig.get_suptitle())
    elif fig.axes:
        title = fig.axes[0].title
    else:
        return
    title.set_text(f"{title.get_text()}\n{line}" if title.get_text() else line)


def pooled_note(varied: list[str], shown: list[str]) -> str:
    pooled = [k for k in varied if k not in shown]
    return f" (pooled over {', '.join(pooled)})" if pooled else ""


def interval_note(cells: list[dict[str, float]], metric: str) -> str:
    """What the bands or bars show: a 95 % interval over repeats, or none with one run a cell."""
    if max((c["n"] for c in cells), default=0) <= 1:
        return "one run per cell: no interval"
    method = "logit-scale t" if is_fraction(metric) else "t"
    two = any(c["n"] == 2 for c in cells)  # t(0.975, 1) = 12.7: such bands leave the frame
    cut = "; n = 2 bands cut at the frame" if two else ""
    return f"mean and 95 % CI ({method}, over repeats{cut})"


def sorted_values(series: pd.Series) -> list[Any]:
    values = list(dict.fromkeys(series.dropna()))
    return sorted(values) if is_numeric(series) else values


def cell_namer(runs: pd.DataFrame, keys: list[str], pairs: bool = False) -> Callable[[object], str]:
    """Names for the groups of ``runs.groupby(keys)``: a cell's short value when one key
    varies (unless ``pairs``), ``key=value`` pairs otherwise (short labels for whole
    sections)."""
    names = {k: short_labels(list(runs[k].unique())) for k in keys}

    def name(key: object) -> str:
        values = key if isinstance(key, tuple) else (key,)
        shown = [names[k].get(v, str(v)) for k, v in zip(keys, values, strict=True)]
        if len(keys) == 1 and not pairs:
            return shown[0]
        named = zip(keys, shown, strict=True)
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in named) or "all runs"

    return name


def use_many_colours(ax: Any, lines: int) -> None:
    """Twenty colours when tab10 would repeat its ten."""
    if lines > 10:
        ax.set_prop_cycle(color=[colormaps["tab20"](i) for i in range(20)])
