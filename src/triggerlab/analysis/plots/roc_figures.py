"""ROC curves of a grid's detectors: one curve per detector cell, from its runs' summaries."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from triggerlab.analysis.defense_tables import DEFENSE_KEYS
from triggerlab.grid.store import run_of

MAX_CURVES = 12


def _curve_label(row: pd.Series, varied: list[str]) -> str:
    parts = [str(row["defense.kind"]) if "defense.kind" in row else "detector"]
    parts += [
        f"{key}={row[key]}"
        for key in varied
        if key not in DEFENSE_KEYS and not key.startswith("defense.")
    ]
    return ", ".join(parts)


def roc_figure(grid_dir: Path, runs: pd.DataFrame, varied: list[str]) -> Figure | None:
    """Each detector cell's ROC curve (its first repeat), with the 1 % and 5 % FPR budgets
    marked; None when no run of the grid detects anything."""
    if "detection_auroc" not in runs:
        return None
    detectors = runs[runs["detection_auroc"].notna()]
    if detectors.empty:
        return None
    first = detectors.sort_values("repeat").drop_duplicates(
        [k for k in varied if k in detectors], keep="first"
    )
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.subplots()
    drawn = 0
    for _, row in first.iterrows():
        roc = (run_of(grid_dir, row["run_id"]).read_summary().defense or {}).get("roc")
        if not roc or drawn == MAX_CURVES:
            continue
        label = f"{_curve_label(row, varied)} (AUROC {row['detection_auroc']:.3f})"
        ax.plot(roc["fpr"], roc["tpr"], linewidth=1.6, label=label)
        drawn += 1
    if drawn == 0:
        return None
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
    for budget in (0.01, 0.05):
        ax.axvline(budget, color="0.5", linestyle=":", linewidth=1)
        ax.text(budget, 0.97, f" {budget:.0%} FPR", rotation=90, va="top", fontsize=7, color="0.4")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (clean items flagged)")
    ax.set_ylabel("true positive rate (poisoned or triggered items flagged)")
    ax.set_title("Detection ROC curves (first repeat of each cell)", fontsize=10)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    fig.tight_layout()
    return fig
