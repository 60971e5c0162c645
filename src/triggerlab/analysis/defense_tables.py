"""The defence-by-attack table of a grid that varies the defence: one row per defence, one
column per attack setting (trigger kind, rate, ...), each cell what the defence achieved.

A repair's cell gives the attack metric and the clean metric after it (ASR and
clean accuracy, or the regression errors) and, for classification, its DER
(``der``); a detector's, its detection AUROC,
TPR at 5 % FPR and the FPR of its own threshold; a model inspection's, in how
many runs it flagged a class and the target; no defence, the metrics as
trained. Values are means over
the repeats with their 95 % interval (``statistics.interval``), and their count.
"""

from __future__ import annotations

import math

import pandas as pd

from triggerlab.analysis.statistics import interval
from triggerlab.catalogue.metrics import metric

DEFENSE_KEYS = ("defense", "defense.kind")


def der(asr_before: float, asr_after: float, ca_before: float, ca_after: float) -> float:
    """BackdoorBench's defence effectiveness rating as its docstring defines it
    (SCLBD/BackdoorBench ``utils/metric.py:60``): ``[max(0, ASR drop) - max(0, CA drop) + 1]
    / 2``, in [0, 1]; 0.5 is a defence that changed neither, 1 one that removed the backdoor
    at no cost in accuracy. Its code adds the accuracy drop instead (``metric.py:64`` and
    ``:74``); its ``defense_effectiveness_rate_simplied`` (``:94``) subtracts it, as here."""
    return (max(0.0, asr_before - asr_after) - max(0.0, ca_before - ca_after) + 1.0) / 2.0


def defense_rating(before: dict[str, float], after: dict[str, float]) -> float | None:
    """The DER of a repair from its metrics before and after; None without ASR and CA (a
    detector, a regression task) or where one of them is not a number (no attacked sample)."""
    names = ("asr", "clean_acc")
    values = [d.get(n) for d in (before, after) for n in names]
    if any(not isinstance(v, int | float) or math.isnan(v) for v in values):
        return None
    asr_before, ca_before, asr_after, ca_after = (float(v) for v in values)  # type: ignore[arg-type]
    return der(asr_before, asr_after, ca_before, ca_after)


def _interval_text(values: pd.Series, name: str) -> str:
    """``mean [low, high]`` with three decimals (shares), or the mean alone for one run."""
    stats = interval(values, name)
    if stats["n"] <= 1:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def _values(runs: pd.DataFrame, names: tuple[str, ...]) -> str:
    """``short mean [low, high]`` of each metric present, joined."""
    parts = []
    for name in names:
        values = pd.to_numeric(runs[name], errors="coerce") if name in runs else None
        if values is not None and values.notna().any():
            short = metric(name.removesuffix("_after").removeprefix("detection_")).short
            parts.append(f"{short} {_interval_text(values, name)}")
    return " · ".join(parts)


def _flagged(runs: pd.DataFrame) -> str:
    """A model inspection's verdicts: in how many runs it flagged a class, and the target."""
    if "defense_flagged_classes" not in runs or runs["defense_flagged_classes"].isna().all():
        return ""
    verdicts = runs["defense_flagged_classes"].dropna().astype(str)
    flagged = int((verdicts != "[]").sum())
    target = int(runs["defense_target_flagged"].fillna(False).astype(bool).sum())
    return f"flagged a class in {flagged}/{len(verdicts)}, the target in {target}/{len(verdicts)}"


def defense_cell(runs: pd.DataFrame, task_metrics: tuple[str, str]) -> str:
    """What the defence in ``runs`` (one cell's repeats) achieved, as one short text."""
    if runs.empty:
        return ""
    attack, clean = task_metrics
    parts = [
        _flagged(runs),
        _values(runs, (f"{attack}_after", f"{clean}_after", "der")),
        _values(runs, ("detection_auroc", "detection_tpr_at_5pct_fpr", "detection_fpr")),
    ]
    if not any(parts):  # no defence, or one that reports neither (flagged classes only)
        parts = [_values(runs, (attack, clean))]
    return " · ".join(p for p in parts if p) + f" (n={len(runs)})"


def _defense_labels(runs: pd.DataFrame, key: str) -> pd.Series:
    """The defence's kind, or its whole settings where one kind appears with several."""
    if key == "defense.kind" or "defense.kind" not in runs:
        return runs[key].astype(str)
    kinds = runs["defense.kind"].astype(str)
    per_kind = runs.groupby(kinds)[key].nunique()
    return kinds.where(kinds.map(per_kind) == 1, runs[key].astype(str))


def _attack_labels(runs: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One label per attack setting: the varied keys' values (a section by its kind when the
    kind alone tells its values apart)."""
    if not keys:
        return pd.Series("all runs", index=runs.index)
    columns = []
    for key in keys:
        column = runs[key].astype(str)
        kind = f"{key}.kind"
        if kind in runs and runs.groupby(runs[kind].astype(str))[key].nunique().max() == 1:
            column = runs[kind].astype(str)
        columns.append(column if len(keys) == 1 else f"{key}=" + column)
    label = columns[0]
    for column in columns[1:]:
        label = label + ", " + column
    return label


def defense_table(table: pd.DataFrame, varied: list[str]) -> pd.DataFrame | None:
    """Rows: defences; columns: attack settings; None when the grid does not vary the defence."""
    key = next((k for k in DEFENSE_KEYS if k in varied), None)
    if key is None:
        return None
    runs = table[(table["status"] == "complete") & (table["role"] != "baseline")].copy()
    if runs.empty:
        return None
    attack_keys = [k for k in varied if k not in DEFENSE_KEYS and runs[k].nunique() > 1]
    runs["_defense"] = _defense_labels(runs, key)
    runs["_attack"] = _attack_labels(runs, attack_keys)
    task_metrics = ("asr", "clean_acc") if "asr" in runs else ("attack_error", "clean_error")
    rows = list(dict.fromkeys(runs["_defense"]))
    columns = list(dict.fromkeys(runs["_attack"]))
    cells = {
        column: [
            defense_cell(runs[(runs["_defense"] == d) & (runs["_attack"] == column)], task_metrics)
            for d in rows
        ]
        for column in columns
    }
    frame = pd.DataFrame(cells, index=pd.Index(rows, name="defence"))
    frame.columns.name = " x ".join(attack_keys) or "attack"
    return frame


def defense_markdown(frame: pd.DataFrame) -> str:
    header = [f"defence \\ {frame.columns.name}", *(str(c) for c in frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    rows = zip(frame.index, frame.values, strict=True)
    lines += ["| " + " | ".join([str(i), *row]) + " |" for i, row in rows]
    return "\n".join(lines) + "\n"
