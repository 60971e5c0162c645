"""The stealth-versus-success frontier: what each trigger costs in visibility for its success.

One point per cell of the grid: x is a stealth metric of the triggered test
images (mean over the cell's runs), y the attack's success with its 95 %
interval over repeats; one colour per trigger kind. A cell is on the Pareto
front when no other cell is at least as stealthy and at least as successful,
and strictly better in one of the two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from triggerlab.analysis.plots.axes import cell_namer, error_lengths, outside_legend, value_label
from triggerlab.analysis.statistics import interval
from triggerlab.catalogue.metrics import metric_label

# Stealth metrics the x axis can show, and whether a larger value is stealthier.
STEALTH_AXES = {
    "psnr_db": True,
    "ssim": True,
    "linf_mean": False,
    "l2_mean": False,
    "l0_fraction": False,
}
MAX_ANNOTATED = 12
MARKERS = "osD^vPX*<>hp8"  # with 20 colours: fourteen kinds stay tellable apart
PALETTE = colormaps["tab20"]


def pareto_front(x: np.ndarray, y: np.ndarray, x_higher_better: bool) -> np.ndarray:
    """Indices of the points no other point dominates (y higher is better), sorted by x."""
    xs = x if x_higher_better else -x
    front = [
        i
        for i in range(len(x))
        if not np.any((xs >= xs[i]) & (y >= y[i]) & ((xs > xs[i]) | (y > y[i])))
    ]
    return np.array(sorted(front, key=lambda i: x[i]), dtype=int)


def success_metric(runs: pd.DataFrame, lead: str = "asr") -> str | None:
    """The grid's lead ASR (``asr`` or ``asr_all``), or a regression study's first
    ``attack_success_<tau>``: shares, higher better."""
    if lead in runs:
        return lead
    return next((c for c in runs.columns if str(c).startswith("attack_success_")), None)


def frontier_cells(
    runs: pd.DataFrame, varied: list[str], stealth: str, success: str
) -> pd.DataFrame:
    """One row per cell: kind, label, stealth mean, success mean and interval."""
    groups = runs.groupby(varied, sort=False, dropna=False) if varied else [((), runs)]
    name = cell_namer(runs, varied)
    rows: list[dict[str, Any]] = []
    for key, group in groups:
        stealth_values = pd.to_numeric(group[stealth], errors="coerce").dropna()
        if stealth_values.empty:  # a trigger that changed nothing: no finite PSNR
            continue
        spread = interval(group[success], success)
        kind = group["trigger.kind"].iloc[0] if "trigger.kind" in group else "trigger"
        rows.append(
            {
                "kind": kind,
                "label": name(key),
                "x": float(stealth_values.mean()),
                "y": spread["mean"],
                "low": spread["ci_low"],
                "high": spread["ci_high"],
                "n": spread["n"],
            }
        )
    return pd.DataFrame(rows)


def frontier_figure(
    runs: pd.DataFrame, varied: list[str], stealth: str = "psnr_db", success: str = "asr"
) -> Figure:
    """Success against stealth, a colour per kind, the Pareto front drawn and its cells named."""
    cells = frontier_cells(runs, varied, stealth, success)
    higher = STEALTH_AXES[stealth]
    fig = Figure(figsize=(8.0, 5.6), layout="constrained")
    ax = fig.subplots()
    for number, (kind, part) in enumerate(cells.groupby("kind", sort=True)):
        ax.errorbar(
            part["x"],
            part["y"],
            yerr=error_lengths(part["y"], part["low"], part["high"]),
            fmt=MARKERS[number % len(MARKERS)],
            color=PALETTE((2 * number) % 20 + (2 * number // 20) % 2),  # darks, then lights
            label=str(kind),
            capsize=3,
            markersize=5,
            alpha=0.85,
        )
    if len(cells):
        _draw_front(ax, cells, higher)
    direction = "stealthier ->" if higher else "<- stealthier"
    ax.set_xlabel(f"{value_label(stealth)}   {direction}")
    ax.set_ylabel(value_label(success, runs))
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    outside_legend(ax, title="trigger kind")
    repeats = int(cells["n"].max()) if len(cells) else 0
    ax.set_title(
        f"{metric_label(success)} vs {metric_label(stealth)}: one point per cell, "
        f"mean and 95 % CI over {repeats} repeat(s)",
        fontsize=9,
    )
    return fig


def _draw_front(ax: Any, cells: pd.DataFrame, higher: bool) -> None:
    """The Pareto front as a dashed step line, its cells ringed and named."""
    front = pareto_front(cells["x"].to_numpy(), cells["y"].to_numpy(), higher)
    best = cells.iloc[front]
    ax.step(
        best["x"],
        best["y"],
        where="pre" if higher else "post",  # best success at this stealth or better
        color="0.3",
        linestyle="--",
        linewidth=1,
        label="Pareto front",
        zorder=0,
    )
    ax.scatter(
        best["x"],
        best["y"],
        s=110,
        facecolors="none",
        edgecolors="black",
        linewidths=1.0,
        zorder=3,
    )
    # numbers by the rings, names listed beside the plot: close cells' names would overlap
    names = []
    for number, (_, row) in enumerate(best.head(MAX_ANNOTATED).iterrows(), start=1):
        ax.annotate(
            str(number),
            (row["x"], row["y"]),
            textcoords="offset points",
            xytext=(5, -11),
            fontsize=7,
            fontweight="bold",
        )
        names.append(f"{number}  {row['label']}")
    if len(best) > MAX_ANNOTATED:
        names.append(f"(and {len(best) - MAX_ANNOTATED} more)")
    ax.text(
        1.02,
        0.0,
        "Pareto front\n" + "\n".join(names),
        transform=ax.transAxes,
        fontsize=6.5,
        va="bottom",
        ha="left",
    )
