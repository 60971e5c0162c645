"""Run directories -> one tidy table -> per-cell statistics.

``results.csv``/``results.parquet``: one row per run of the manifest, with every
varied key as a column (its dotted name), the final metrics, the trigger's
stealthiness and the timings. ``summary.csv``: one row per cell (the varied
values), over the repeats: mean, standard deviation (n - 1), n, and the 95 %
confidence interval ``mean +- t(0.975, n - 1) * std / sqrt(n)``.

The clean accuracy drop of a run is the clean accuracy of its clean baseline
(same config and seed, poisoning rate 0) minus its own, so repeats are paired
and the drop's interval comes from the paired differences. For regression the
same pairing gives the clean error increase (own clean error minus the baseline's).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from scipy import stats

from triggerlab.config import UNION_SECTIONS
from triggerlab.errors import ArgumentError
from triggerlab.files import write_bytes_atomic, write_text_atomic
from triggerlab.grid.store import read_manifest, run_of
from triggerlab.metrics import STEALTH, TASK_ORDER


def _run_row(grid_dir: Path, entry: dict[str, Any], varied: list[str]) -> dict[str, Any]:
    run = run_of(grid_dir, entry["id"])
    row: dict[str, Any] = {
        "run_id": entry["id"],
        "role": entry["role"],
        "repeat": entry["repeat"],
        "seed": entry["seed"],
        "baseline_id": entry.get("baseline_id"),
    }
    row.update({key: _scalar(entry["cell"].get(key)) for key in varied})
    for key in varied:  # a whole tagged section varied: its kind gets a column too
        value = entry["cell"].get(key)
        if key in UNION_SECTIONS and isinstance(value, dict) and "kind" in value:
            row[f"{key}.kind"] = value["kind"]
    row["status"] = run.status()
    if row["status"] == "failed":
        row["error"] = run.read_failed()
    if row["status"] != "complete":
        return row
    summary = run.read_summary()
    row.update(summary.final)
    row.update({k: summary.stealth.get(k) for k in STEALTH})
    defense = summary.defense
    if defense:  # the repaired model's metrics, or the detector's, beside the attack's
        row.update({f"{metric}_after": value for metric, value in defense.get("after", {}).items()})
        row.update({f"detection_{k}": value for k, value in defense.get("detection", {}).items()})
        row["defense_clean_samples"] = defense.get("clean_samples")
    protocol = summary.protocol
    if protocol:  # reference 000's two stages: the metrics before fine-tuning beside the final
        row.update({f"pretuned_{k}": v for k, v in protocol.get("after_pretune", {}).items()})
    row["poison_count"] = summary.poison.count
    row["poison_fraction"] = summary.poison.fraction
    timings = summary.timings
    row.update(
        total_s=timings.total_s,
        train_s=timings.train_s,
        train_images_per_s=timings.train_images_per_s,
    )
    return row


def _scalar(value: Any) -> Any:
    """Table cells hold scalars: lists and mappings (positions, colours) become their YAML text."""
    if isinstance(value, list | dict | tuple):
        return yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return value


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The task metrics present in a results table, in a stable order."""
    named = [m for m in TASK_ORDER if m in table]
    extra = sorted(
        c
        for c in table
        if c.startswith(("attack_success_", "clean_mae_", "bin_")) and not c.endswith("_after")
    )
    after = sorted(c for c in table if c.endswith("_after"))
    detection = sorted(c for c in table if c.startswith("detection_"))
    pretuned = sorted(c for c in table if c.startswith("pretuned_"))
    return named + extra + after + detection + pretuned


def collect(grid_dir: Path | str) -> tuple[pd.DataFrame, list[str]]:
    """The tidy per-run table and the varied keys."""
    grid_dir = Path(grid_dir)
    manifest = read_manifest(grid_dir)
    varied = list(manifest.get("varied", []))
    rows = [_run_row(grid_dir, entry, varied) for entry in manifest["runs"]]
    table = pd.DataFrame(rows)
    has_baselines = "baseline_id" in table and table["baseline_id"].notna().any()
    if has_baselines and "clean_acc" in table:
        clean = table.set_index("run_id")["clean_acc"]
        table["clean_acc_drop"] = table["baseline_id"].map(clean) - table["clean_acc"]
    if has_baselines and "clean_error" in table:
        error = table.set_index("run_id")["clean_error"]
        table["clean_error_increase"] = table["clean_error"] - table["baseline_id"].map(error)
    return table, varied


def interval(values: pd.Series) -> dict[str, float]:
    """Mean, sample std, n and the two-sided 95 % t interval of the finite values."""
    clean = values.dropna().astype(float)
    n = int(clean.size)
    mean = float(clean.mean()) if n else math.nan
    std = float(clean.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def summarize(table: pd.DataFrame, varied: list[str]) -> pd.DataFrame:
    """One row per cell of the grid (baselines excluded), aggregated over repeats."""
    runs = table[(table["role"] == "grid") & (table["status"] == "complete")]
    metrics = [
        *metric_columns(runs),
        *(m for m in (*STEALTH, "poison_count", "total_s") if m in runs),
    ]
    rows = []
    groups = runs.groupby(varied, sort=False, dropna=False) if varied else [((), runs)]
    for key, group in groups:
        values = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(varied, values, strict=True))
        row["n"] = len(group)
        for metric in metrics:
            stats_ = interval(group[metric])
            row.update({f"{metric}_{name}": v for name, v in stats_.items() if name != "n"})
        rows.append(row)
    return pd.DataFrame(rows)


def parse_comparison(text: str, varied: list[str]) -> tuple[str, Any, Any]:
    """``key=a,b`` -> (key, a, b), values read as YAML like every other setting."""
    key, sep, values = text.partition("=")
    parts = values.split(",")
    if not sep or len(parts) != 2:
        raise ArgumentError("compare", "expected KEY=A,B, e.g. trigger.size=3,5", repr(text))
    if key not in varied:
        raise ArgumentError(
            "compare", f"{key!r} is not varied in this grid ({', '.join(varied)})", repr(text)
        )
    a, b = (_scalar(yaml.safe_load(p)) for p in parts)
    return key, a, b


def compare(table: pd.DataFrame, varied: list[str], key: str, a: Any, b: Any) -> pd.DataFrame:
    """Welch t-tests between cells with ``key = a`` and ``key = b``, other varied keys equal."""
    runs = table[(table["role"] == "grid") & (table["status"] == "complete")]
    others = [k for k in varied if k != key]
    metrics = metric_columns(runs)
    rows = []
    groups = runs.groupby(others, sort=False, dropna=False) if others else [((), runs)]
    for other_key, group in groups:
        values = other_key if isinstance(other_key, tuple) else (other_key,)
        left, right = group[group[key] == a], group[group[key] == b]
        if left.empty or right.empty:
            continue
        for metric in metrics:
            x, y = left[metric].dropna().astype(float), right[metric].dropna().astype(float)
            with warnings.catch_warnings():
                # Identical repeats (e.g. ASR 0 everywhere) make scipy warn; t is then nan or inf.
                warnings.simplefilter("ignore", RuntimeWarning)
                test = stats.ttest_ind(x, y, equal_var=False) if len(x) > 1 and len(y) > 1 else None
            row = dict(zip(others, values, strict=True))
            row.update(
                metric=metric,
                key=key,
                a=a,
                b=b,
                mean_a=float(x.mean()),
                mean_b=float(y.mean()),
                n_a=len(x),
                n_b=len(y),
                t=float(test.statistic) if test else math.nan,
                df=float(test.df) if test else math.nan,
                p=float(test.pvalue) if test else math.nan,
            )
            rows.append(row)
    if not rows:
        raise ArgumentError(
            "compare", "no cells have both values with finished runs", f"{key}={a},{b}"
        )
    return pd.DataFrame(rows)


def _cell_text(values: pd.Series) -> str:
    stats_ = interval(values)
    if stats_["n"] == 0:
        return ""
    mean = format(stats_["mean"], "#.3g").rstrip(".")  # 3 significant digits, zeros kept
    if stats_["n"] == 1:
        return mean
    return f"{mean} ± {stats_['ci_high'] - stats_['mean']:.2g}"


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
    others = [k for k in varied if k not in keys and runs[k].nunique(dropna=False) > 1]
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
    row_key = keys[0]
    labels = runs[row_key].astype(str)
    if "poison.rate" not in keys and "role" in runs:
        labels = labels.where(runs["role"] != "baseline", labels + " (clean, rate 0)")
    runs[row_key] = labels
    row_values = list(dict.fromkeys(labels))
    if len(keys) == 1:
        rows = [
            [v, *(_cell_text(runs.loc[runs[row_key] == v, m]) for m in metrics)] for v in row_values
        ]
        return _markdown([row_key, *metrics], rows)
    column_key = keys[1]
    column_values = list(dict.fromkeys(runs[column_key]))
    parts = []
    for metric in metrics:
        rows = []
        for v in row_values:
            here = runs[runs[row_key] == v]
            cells = (_cell_text(here.loc[here[column_key] == c, metric]) for c in column_values)
            rows.append([v, *cells])
        header = [f"{metric}: {row_key} \\ {column_key}", *(str(c) for c in column_values)]
        parts.append(_markdown(header, rows))
    return "\n".join(parts)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_text_atomic(path, frame.to_csv(index=False))


def write_results(
    grid_dir: Path | str,
    comparisons: list[str] | None = None,
    table_keys: list[str] | None = None,
    table_metrics: list[str] | None = None,
) -> dict[str, Path]:
    """Write results.csv, results.parquet, summary.csv (and comparisons.csv, tables.md)."""
    grid_dir = Path(grid_dir)
    table, varied = collect(grid_dir)
    tables = None
    if table_keys:  # checked before anything is written
        tables = paper_tables(table, varied, table_keys, table_metrics or metric_columns(table))
    paths = {"results.csv": grid_dir / "results.csv", "summary.csv": grid_dir / "summary.csv"}
    _write_csv(paths["results.csv"], table)
    parquet = grid_dir / "results.parquet"
    write_bytes_atomic(parquet, _parquet_bytes(table))
    paths["results.parquet"] = parquet
    _write_csv(paths["summary.csv"], summarize(table, varied))
    if comparisons:
        parsed = [parse_comparison(text, varied) for text in comparisons]
        frame = pd.concat([compare(table, varied, *p) for p in parsed], ignore_index=True)
        paths["comparisons.csv"] = grid_dir / "comparisons.csv"
        _write_csv(paths["comparisons.csv"], frame)
    if tables is not None:
        paths["tables.md"] = grid_dir / "tables.md"
        write_text_atomic(paths["tables.md"], tables)
    return paths


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    # Mixed-type columns (a key varied over numbers and names) are stored as text.
    safe = table.copy()
    for column in safe.columns:
        kinds = {type(v) for v in safe[column].dropna()}
        if len(kinds) > 1 and not kinds <= {int, float}:
            safe[column] = safe[column].map(lambda v: None if v is None else str(v))
    safe.to_parquet(buffer, index=False)
    return buffer.getvalue()


collect_results = collect
