"""Markdown tables of cell means, as papers print them (``triggerlab results --table``)."""

from __future__ import annotations

import pandas as pd

from triggerlab.analysis.cell_labels import is_spec, short_labels
from triggerlab.analysis.statistics import interval
from triggerlab.catalogue.metrics import is_fraction, metric_columns
from triggerlab.errors import ArgumentError


def cell_text(values: pd.Series, metric: str) -> str:
    """``mean ± half-width``, or ``mean [low, high]`` for a bounded share's asymmetric interval."""
    stats_ = interval(values, metric)
    if stats_["n"] == 0:
        return ""
    mean = _significant(stats_["mean"])
    if stats_["n"] == 1:
        return mean
    if is_fraction(metric):
        return f"{mean} [{_significant(stats_['ci_low'])}, {_significant(stats_['ci_high'])}]"
    return f"{mean} ± {stats_['ci_high'] - stats_['mean']:.2g}"


def _significant(value: float) -> str:
    """3 significant digits, trailing zeros kept, and no ``-0``."""
    return format(value + 0.0, "#.3g").rstrip(".")


def _value_text(value: object) -> str:
    return "null" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- " + "| ---: " * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def paper_tables(
    table: pd.DataFrame, varied: list[str], keys: list[str], metrics: list[str]
) -> str:
    """Markdown tables of cell means (± the 95 % interval's half-width over repeats).

    One key: a row per value and a column per metric. Two keys: one table per
    metric, the first key down and the second across, as papers print alpha x
    delta. Clean baselines are rows of their own: the ``poison.rate`` 0 row
    when that key is a table key, else rows labelled ``(clean, rate 0)``.
    """
    runs = table[table["status"] == "complete"].copy()
    unknown = [k for k in keys if k not in varied]
    # a key "varied" over one value splits nothing, so the tables need not name it
    grid_runs = runs[runs["role"] != "baseline"] if "role" in runs else runs
    others = [k for k in varied if k not in keys and grid_runs[k].nunique(dropna=False) > 1]
    if not 1 <= len(keys) <= 2 or unknown or others:
        raise ArgumentError(
            "table",
            "expected one or two of the varied keys, naming every key with more than one "
            f"value ({', '.join(varied)})",
            ",".join(keys),
        )
    missing = [m for m in metrics if m not in runs]
    if missing:
        raise ArgumentError(
            "metric",
            f"not in these results (expected one of {', '.join(metric_columns(runs))})",
            ", ".join(missing),
        )
    for key in keys:  # a setting left null is a value of its own, printed as in YAML
        names = short_labels(list(runs[key].unique()))  # a whole trigger: its kind and knobs
        runs[key] = runs[key].map(lambda v, names=names: names[v] if is_spec(v) else _value_text(v))
    row_key = keys[0]
    labels = runs[row_key]
    if "poison.rate" not in keys and "role" in runs:
        labels = labels.where(runs["role"] != "baseline", labels + " (clean, rate 0)")
    runs[row_key] = labels
    row_values = list(dict.fromkeys(labels))
    if len(keys) == 1:
        rows = [
            [v, *(cell_text(runs.loc[runs[row_key] == v, m], m) for m in metrics)]
            for v in row_values
        ]
        return _markdown([row_key, *metrics], rows)
    column_key = keys[1]
    column_values = list(dict.fromkeys(runs[column_key]))
    parts = []
    for metric in metrics:
        rows = []
        for v in row_values:
            here = runs[runs[row_key] == v]
            cells = (
                cell_text(here.loc[here[column_key] == c, metric], metric) for c in column_values
            )
            rows.append([v, *cells])
        header = [f"{metric}: {row_key} \\ {column_key}", *(str(c) for c in column_values)]
        parts.append(_markdown(header, rows))
    return "\n".join(parts)
