"""Run directories -> one tidy table -> per-cell statistics (``statistics.py``) and tables.

``results.csv``/``results.parquet``: one row per run of the manifest, with every
varied key as a column (its dotted name), the final metrics, the trigger's
stealthiness and the timings. ``summary.csv``: one row per cell (the varied
values), over the repeats: mean, standard deviation (n - 1), n, and the 95 %
confidence interval ``mean +- t(0.975, n - 1) * std / sqrt(n)``; beside it, for a share
of the test images (clean accuracy, ASR, ...), the Wilson interval of the test predictions
pooled over the repeats (``binomial.py``), from the test-set sizes the runs record.

The clean accuracy drop of a run is the clean accuracy of its clean baseline
(same config and seed, poisoning rate 0) minus its own, so repeats are paired
and the drop's interval comes from the paired differences. For regression the
same pairing gives the clean error increase (own clean error minus the baseline's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from triggerlab.analysis.binomial import binomial_columns
from triggerlab.analysis.defense_tables import defense_markdown, defense_rating, defense_table
from triggerlab.analysis.lead import lead_setting, led
from triggerlab.analysis.statistics import (
    adjust_p_values,
    compare,
    interval,
    parse_comparison,
    table_value,
)
from triggerlab.analysis.tables import interval_legend, paper_tables
from triggerlab.catalogue.metrics import STEALTH, error_unit, metric_columns
from triggerlab.config import UNION_SECTIONS
from triggerlab.files import write_bytes_atomic, write_text_atomic
from triggerlab.grid.store import read_manifest, run_of


def cell_columns(cell: dict[str, Any], varied: list[str]) -> dict[str, Any]:
    """A run's value of each varied key as a table cell; a whole tagged section varied (a
    trigger, a defence) gets a column for its kind too."""
    columns = {key: table_value(cell.get(key)) for key in varied}
    for key in varied:
        value = cell.get(key)
        if key in UNION_SECTIONS and isinstance(value, dict) and "kind" in value:
            columns[f"{key}.kind"] = value["kind"]
    return columns


def share_counts(data: dict[str, Any], task: str | None) -> dict[str, int | None]:
    """The test images a run's shares count (``binomial.TRIALS``); None where the summary
    does not say. A run written before ``attack_test_size`` was recorded still has it when
    the attack is meant for every test image, as in regression."""
    size, attack = data.get("test_size"), data.get("attack_test_size")
    if attack is None and task == "regression":
        attack = size
    return {"test_size": size, "attack_test_size": attack}


def _run_row(grid_dir: Path, entry: dict[str, Any], varied: list[str]) -> dict[str, Any]:
    run = run_of(grid_dir, entry["id"])
    row: dict[str, Any] = {
        "run_id": entry["id"],
        "role": entry["role"],
        "repeat": entry["repeat"],
        "seed": entry["seed"],
        "baseline_id": entry.get("baseline_id"),
    }
    row.update(cell_columns(entry["cell"], varied))
    row["status"] = run.status()
    if row["status"] == "failed":
        row["error"] = run.read_failed()
    if row["status"] != "complete":
        return row
    summary = run.read_summary()
    row.update(summary.final)
    unit = error_unit(summary.data.get("label_kind"))
    if unit is not None:  # a regression study's
        row["label_unit"] = unit
    row.update({k: summary.stealth.get(k) for k in STEALTH})
    defense = summary.defense
    if defense:  # the repaired model's metrics, or the detector's, beside the attack's
        row.update({f"{metric}_after": value for metric, value in defense.get("after", {}).items()})
        row.update({f"detection_{k}": value for k, value in defense.get("detection", {}).items()})
        row["der"] = defense_rating(defense.get("before", {}), defense.get("after", {}))
        row["defense_clean_samples"] = defense.get("clean_samples")
        if "target_flagged" in defense:  # a model inspection: did it name the target?
            row["defense_target_flagged"] = defense["target_flagged"]
            row["defense_target_anomaly_index"] = defense.get("target_anomaly_index")
            row["defense_flagged_classes"] = table_value(defense.get("flagged", []))
    protocol = summary.protocol
    if protocol:  # reference 000's two stages: the metrics before fine-tuning beside the final
        row.update({f"pretuned_{k}": v for k, v in protocol.get("after_pretune", {}).items()})
    row.update(share_counts(summary.data, summary.task))
    row["poison_count"] = summary.poison.count
    row["poison_fraction"] = summary.poison.fraction
    timings = summary.timings
    row.update(
        total_s=timings.total_s,
        train_s=timings.train_s,
        train_images_per_s=timings.train_images_per_s,
    )
    return row


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
            stats_ = interval(group[metric], metric)
            row.update({f"{metric}_{name}": v for name, v in stats_.items() if name != "n"})
            row.update(binomial_columns(group, metric))
        rows.append(row)
    return pd.DataFrame(rows)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_text_atomic(path, frame.to_csv(index=False))


def write_results(
    grid_dir: Path | str,
    comparisons: list[str] | None = None,
    table_keys: list[str] | None = None,
    table_metrics: list[str] | None = None,
) -> dict[str, Path]:
    """Write results.csv, results.parquet, summary.csv (and comparisons.csv, tables.md, and
    defenses.md when the grid varies the defence)."""
    grid_dir = Path(grid_dir)
    table, varied = collect(grid_dir)
    tables = None
    if table_keys:  # checked before anything is written
        shown = table_metrics or led(metric_columns(table), lead_setting(grid_dir))
        tables = paper_tables(table, varied, table_keys, shown) + interval_legend(table, shown)
    paths = {"results.csv": grid_dir / "results.csv", "summary.csv": grid_dir / "summary.csv"}
    _write_csv(paths["results.csv"], table)
    parquet = grid_dir / "results.parquet"
    write_bytes_atomic(parquet, _parquet_bytes(table))
    paths["results.parquet"] = parquet
    _write_csv(paths["summary.csv"], summarize(table, varied))
    if comparisons:
        parsed = [parse_comparison(text, varied) for text in comparisons]
        frame = pd.concat([compare(table, varied, *p) for p in parsed], ignore_index=True)
        frame = adjust_p_values(frame)  # one family: every test written together
        paths["comparisons.csv"] = grid_dir / "comparisons.csv"
        _write_csv(paths["comparisons.csv"], frame)
    if tables is not None:
        paths["tables.md"] = grid_dir / "tables.md"
        write_text_atomic(paths["tables.md"], tables)
    defenses = defense_table(table, varied)
    if defenses is not None:
        paths["defenses.md"] = grid_dir / "defenses.md"
        write_text_atomic(paths["defenses.md"], defense_markdown(defenses))
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


__all__ = [
    "collect",
    "collect_results",
    "compare",
    "interval",
    "metric_columns",
    "paper_tables",
    "parse_comparison",
    "summarize",
    "write_results",
]
