"""Markdown tables of cell means, as papers print them (``triggerlab results --table``)."""

from __future__ import annotations

import math

import pandas as pd

from triggerlab.analysis.binomial import pooled_binomial, trials_column
from triggerlab.analysis.cell_labels import is_spec, short_labels
from triggerlab.analysis.statistics import interval
from triggerlab.catalogue.metrics import is_fraction, metric_columns
from triggerlab.errors import ArgumentError


def cell_text(values: pd.Series, metric: str, trials: pd.Series | None = None) -> str:
    """``mean ± half-width``, or ``mean [low, high]`` for a bounded share's asymmetric interval;
    with the runs' test-image counts (``trials``), the binomial interval of their pooled
    predictions after it: ``0.981 [0.014, 1.00]; binomial [0.970, 0.989]``."""
    stats_ = interval(values, metric)
    if stats_["n"] == 0:
        return ""
    mean = _significant(stats_["mean"])
    if stats_["n"] == 1:
        text = mean
    elif is_fraction(metric):
        text = f"{mean} [{_significant(stats_['ci_low'])}, {_significant(stats_['ci_high'])}]"
    else:
        text = f"{mean} ± {stats_['ci_high'] - stats_['mean']:.2g}"
    pooled = pooled_binomial(values, trials) if trials is not None else None
    if pooled is not None and not math.isnan(pooled["low"]):
        text += f"; binomial [{_significant(pooled['low'])}, {_significant(pooled['high'])}]"
    return text


def _trials(runs: pd.DataFrame, metric: str) -> pd.Series | None:
    column = trials_column(metric)
    return runs[column] if column is not None and column in runs else None


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
        rows = []
        for v in row_values:
            here = runs[runs[row_key] == v]
            rows.append([v, *(cell_text(here[m], m, _trials(here, m)) for m in metrics)])
        return _markdown([row_key, *metrics], rows)
    column_key = keys[1]
    column_values = list(dict.fromkeys(runs[column_key]))
    parts = []
    for metric in metrics:
        rows = []
        for v in row_values:
            here = runs[runs[row_key] == v]
            cells = []
            for c in column_values:
                cell = here[here[column_key] == c]
                cells.append(cell_text(cell[metric], metric, _trials(cell, metric)))
            rows.append([v, *cells])
        header = [f"{metric}: {row_key} \\ {column_key}", *(str(c) for c in column_values)]
        parts.append(_markdown(header, rows))
    return "\n".join(parts)


def interval_legend(runs: pd.DataFrame, metrics: list[str]) -> str:
    """What the intervals of ``paper_tables`` are, to print under them ('' for no share)."""
    shares = [m for m in metrics if is_fraction(m)]
    if not shares:
        return ""
    lines = ["", "[low, high]: 95 % interval over repeats (t on the logit scale)."]
    if any(_trials(runs, m) is not None for m in shares):
        lines.append(
            "binomial [low, high]: Wilson 95 % interval of the test predictions pooled over "
            "the repeats (the test-set sampling error alone, not the spread between trainings)."
        )
    return "\n".join(lines) + "\n"
