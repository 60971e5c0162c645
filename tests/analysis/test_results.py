"""Aggregation, confidence intervals, Welch tests and the clean accuracy drop, by hand."""

import json
import math

import pandas as pd
import pytest
from scipy import stats

from triggerlab.analysis.results import (
    collect,
    compare,
    interval,
    metric_columns,
    paper_tables,
    parse_comparison,
    summarize,
    write_results,
)
from triggerlab.errors import ConfigError


def test_interval_by_hand_and_against_scipy():
    result = interval(pd.Series([0.5, 0.7, 0.9]))
    assert result["mean"] == pytest.approx(0.7)
    assert result["std"] == pytest.approx(0.2)  # sqrt((0.04 + 0 + 0.04) / 2)
    assert result["n"] == 3
    half = 4.302652729911275 * 0.2 / math.sqrt(3)  # t(0.975, 2)
    assert result["ci_low"] == pytest.approx(0.7 - half)
    assert result["ci_high"] == pytest.approx(0.7 + half)
    low, high = stats.t.interval(0.95, 2, loc=0.7, scale=0.2 / math.sqrt(3))
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high))


def test_a_share_interval_always_holds_its_mean():
    # 1.0 clips to 0.999 on the logit scale: the interval of the clipped logits of
    # 1, 1, 0.9985 ends below their mean 0.9995 and is widened to hold it
    result = interval(pd.Series([1.0, 1.0, 0.9985]), "asr")
    assert result["ci_low"] <= result["mean"] <= result["ci_high"]
    assert result["ci_high"] == pytest.approx(result["mean"])


def test_interval_of_one_value_has_no_spread():
    result = interval(pd.Series([0.4, None]))
    assert (
        result["n"] == 1
        and result["mean"] == 0.4
        and math.isnan(result["std"])
        and math.isnan(result["ci_low"])
    )


def table() -> pd.DataFrame:
    rows = []
    for size, values in ((2, [0.5, 0.7, 0.9]), (4, [0.1, 0.2])):
        for repeat, asr in enumerate(values):
            rows.append(
                {
                    "run_id": f"{size}-{repeat}",
                    "role": "grid",
                    "status": "complete",
                    "trigger.size": size,
                    "poison.rate": 0.1,
                    "asr": asr,
                    "clean_acc": 0.9 + 0.01 * repeat,
                }
            )
    rows.append(
        {
            "run_id": "b",
            "role": "baseline",
            "status": "complete",
            "trigger.size": 2,
            "poison.rate": 0.0,
            "asr": 0.0,
            "clean_acc": 0.99,
        }
    )
    rows.append(
        {"run_id": "x", "role": "grid", "status": "failed", "trigger.size": 2, "poison.rate": 0.1}
    )
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_summary_rows_per_cell_exclude_baselines_and_failures():
    summary = summarize(table(), ["trigger.size", "poison.rate"])
    assert list(summary["trigger.size"]) == [2, 4]
    assert list(summary["n"]) == [3, 2]
    assert summary.loc[0, "asr_mean"] == pytest.approx(0.7)
    assert summary.loc[1, "asr_mean"] == pytest.approx(0.15)
    assert summary.loc[1, "asr_std"] == pytest.approx(math.sqrt(0.005))
    assert summary.loc[0, "clean_acc_mean"] == pytest.approx(0.91)


def logit_interval(values: list[float]) -> tuple[float, float]:
    """The 95 % t interval of the logits of ``values``, mapped back to [0, 1], by hand."""
    logits = [math.log(v / (1 - v)) for v in values]
    n = len(logits)
    mean = sum(logits) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logits) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return tuple(1 / (1 + math.exp(-(mean + d))) for d in (-half, half))


@pytest.mark.slow
def test_paper_tables_by_hand():
    keys = ["poison.rate", "trigger.size"]
    tables = paper_tables(table(), keys, keys, ["asr"])
    low2, high2 = logit_interval([0.5, 0.7, 0.9])  # size 2
    low4, high4 = logit_interval([0.1, 0.2])  # size 4
    assert 0 < low4 < 0.15 < high4 < 1  # a share's interval stays inside [0, 1]
    assert tables.splitlines() == [
        "| asr: poison.rate \\ trigger.size | 2 | 4 |",
        "| --- | ---: | ---: |",
        f"| 0.1 | 0.700 [{low2:#.3g}, {high2:#.3g}] | 0.150 [{low4:#.3g}, {high4:#.3g}] |",
        "| 0.0 | 0.00 |  |",  # the clean baseline is a row; the failed run counts nowhere
    ]
    one = paper_tables(
        table()[table()["trigger.size"] == 4],
        ["trigger.size"],
        ["trigger.size"],
        ["asr", "clean_acc"],
    )
    low_ca, high_ca = logit_interval([0.90, 0.91])
    assert one.splitlines()[2] == (
        f"| 4 | 0.150 [{low4:#.3g}, {high4:#.3g}] | 0.905 [{low_ca:#.3g}, {high_ca:#.3g}] |"
    )
    # without poison.rate in the table, the baseline is a row of its own, not pooled
    by_size = paper_tables(table(), ["trigger.size"], ["trigger.size"], ["asr"]).splitlines()
    assert by_size[2:] == [
        f"| 2 | 0.700 [{low2:#.3g}, {high2:#.3g}] |",
        f"| 4 | 0.150 [{low4:#.3g}, {high4:#.3g}] |",
        "| 2 (clean, rate 0) | 0.00 |",
    ]
    two_rates = table()
    two_rates.loc[0, "poison.rate"] = 0.2  # now the grid itself varies the rate
    with pytest.raises(ConfigError, match="expected one or two of the varied keys, naming every"):
        paper_tables(two_rates, keys, ["trigger.size"], ["asr"])
    # the rate varied by the clean baselines alone needs no naming: they are rows of their own
    assert paper_tables(table(), keys, ["trigger.size"], ["asr"]).splitlines()[2:] == by_size[2:]
    grid_only = table()[table()["role"] == "grid"]  # poison.rate takes one value: no split
    assert paper_tables(grid_only, keys, ["trigger.size"], ["asr"]).splitlines()[3] == (
        f"| 4 | 0.150 [{low4:#.3g}, {high4:#.3g}] |"
    )
    with pytest.raises(ConfigError, match="metric attack_error: not in these results"):
        paper_tables(table(), keys, keys, ["attack_error"])


def test_long_cell_values_stay_on_one_line():
    from triggerlab.analysis.statistics import table_value as _scalar

    trigger = {"kind": "random", "colors": ["red", "green", "blue"], "sizes": [0.0223, 0.0446]}
    trigger["positions"] = "anywhere"
    text = _scalar(trigger)
    assert "\n" not in text and len(text) > 80  # a Markdown row or CSV cell must not break
    assert text.startswith("{colors: [red, green, blue], kind: random")


@pytest.mark.slow
def test_welch_t_test_by_hand():
    result = compare(table(), ["trigger.size", "poison.rate"], "trigger.size", 2, 4)
    row = result[result["metric"] == "asr"].iloc[0]
    va, vb = 0.04 / 3, 0.005 / 2  # variance / n
    t = (0.7 - 0.15) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1)  # Welch-Satterthwaite
    assert row["t"] == pytest.approx(t)
    assert row["df"] == pytest.approx(df)
    assert row["p"] == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert (row["mean_a"], row["mean_b"], row["n_a"], row["n_b"]) == pytest.approx(
        (0.7, 0.15, 3, 2)
    )


@pytest.mark.slow
def test_comparison_arguments_are_checked():
    assert parse_comparison("trigger.size=2,4", ["trigger.size"]) == ("trigger.size", 2, 4)
    with pytest.raises(ConfigError, match="expected KEY=A,B"):
        parse_comparison("trigger.size=2", ["trigger.size"])
    with pytest.raises(ConfigError, match="not varied"):
        parse_comparison("poison.rate=0.1,0.2", ["trigger.size"])
    with pytest.raises(ConfigError, match="no cells have both"):
        compare(table(), ["trigger.size", "poison.rate"], "trigger.size", 2, 9)


def write_run(grid_dir, identity, clean_acc, asr):
    folder = grid_dir / "runs" / identity
    folder.mkdir(parents=True)
    summary = {
        "status": "complete",
        "final": {
            "clean_acc": clean_acc,
            "asr": asr,
            "asr_all": asr,
            "robust_acc": 1 - asr,
            "train_loss": 0.1,
        },
        "poison": {"count": 10, "fraction": 0.1},
        "stealth": {
            "l0_fraction": 0.01,
            "l2_mean": 1.0,
            "linf_mean": 1.0,
            "psnr_db": 30.0,
            "ssim": 0.99,
        },
        "timings": {"total_s": 1.0, "train_s": 0.5, "train_images_per_s": 1000.0},
    }
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_clean_accuracy_drop_pairs_each_run_with_its_baseline(tmp_path):
    runs = [
        {
            "id": "p0",
            "cell": {"poison.rate": 0.1},
            "repeat": 0,
            "seed": 1,
            "role": "grid",
            "baseline_id": "b0",
        },
        {
            "id": "p1",
            "cell": {"poison.rate": 0.1},
            "repeat": 1,
            "seed": 2,
            "role": "grid",
            "baseline_id": "b1",
        },
        {
            "id": "b0",
            "cell": {"poison.rate": 0.0},
            "repeat": 0,
            "seed": 1,
            "role": "baseline",
            "baseline_id": "b0",
        },
        {
            "id": "b1",
            "cell": {"poison.rate": 0.0},
            "repeat": 1,
            "seed": 2,
            "role": "baseline",
            "baseline_id": "b1",
        },
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"varied": ["poison.rate"], "runs": runs}))
    write_run(tmp_path, "p0", 0.90, 0.8)
    write_run(tmp_path, "p1", 0.85, 0.9)
    write_run(tmp_path, "b0", 0.95, 0.0)
    write_run(tmp_path, "b1", 0.96, 0.1)
    frame, _ = collect(tmp_path)
    drops = dict(zip(frame["run_id"], frame["clean_acc_drop"], strict=True))
    assert drops["p0"] == pytest.approx(0.05) and drops["p1"] == pytest.approx(0.11)
    paths = write_results(tmp_path)
    summary = pd.read_csv(paths["summary.csv"])
    assert len(summary) == 1 and summary.loc[0, "clean_acc_drop_mean"] == pytest.approx(0.08)
    assert pd.read_parquet(paths["results.parquet"])["clean_acc"].tolist() == [
        0.90,
        0.85,
        0.95,
        0.96,
    ]
    from typer.testing import CliRunner

    from triggerlab.cli import app

    bad = CliRunner().invoke(app, ["results", str(tmp_path), "--table", "trigger.size"])
    assert bad.exit_code == 2 and "--table trigger.size: expected one or two" in bad.stderr
    assert not (tmp_path / "tables.md").exists()
    shown = CliRunner().invoke(
        app, ["results", str(tmp_path), "--table", "poison.rate", "--metric", "clean_acc"]
    )
    assert shown.exit_code == 0, shown.output
    low, high = logit_interval([0.90, 0.85])
    assert f"| 0.1 | 0.875 [{low:#.3g}, {high:#.3g}] |" in shown.output
    assert "| 0.0 | 0.955 [" in (tmp_path / "tables.md").read_text()


@pytest.mark.slow
def test_missing_and_failed_runs_are_listed(tmp_path):
    runs = [
        {"id": "a", "cell": {}, "repeat": 0, "seed": 1, "role": "grid", "baseline_id": None},
        {"id": "f", "cell": {}, "repeat": 1, "seed": 2, "role": "grid", "baseline_id": None},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"varied": [], "runs": runs}))
    (tmp_path / "runs" / "f").mkdir(parents=True)
    (tmp_path / "runs" / "f" / "failed.json").write_text(json.dumps({"message": "boom"}))
    frame, _ = collect(tmp_path)
    assert frame.set_index("run_id")["status"].to_dict() == {"a": "missing", "f": "failed"}
    assert frame.set_index("run_id").loc["f", "error"] == "boom"


@pytest.mark.slow
def test_two_stage_runs_report_their_pre_tuned_metrics(tmp_path):
    runs = [
        {"id": f"r{i}", "cell": {"trigger.size": size}, "repeat": 0, "seed": 1, "role": "grid"}
        for i, size in enumerate((2, 4))
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"varied": ["trigger.size"], "runs": runs}))
    for i, (final, pretuned) in enumerate(((0.9, 0.8), (0.7, 0.75))):
        write_run(tmp_path, f"r{i}", final, 0.5)
        path = tmp_path / "runs" / f"r{i}" / "summary.json"
        summary = json.loads(path.read_text())
        summary["protocol"] = {"after_pretune": {"clean_acc": pretuned, "asr": 0.4}}
        path.write_text(json.dumps(summary))
    frame, varied = collect(tmp_path)
    assert frame["pretuned_clean_acc"].tolist() == [0.8, 0.75]
    assert metric_columns(frame)[-2:] == ["pretuned_asr", "pretuned_clean_acc"]
    tables = paper_tables(frame, varied, ["trigger.size"], ["clean_acc", "pretuned_clean_acc"])
    assert tables.splitlines()[2:] == ["| 2 | 0.900 | 0.800 |", "| 4 | 0.700 | 0.750 |"]


@pytest.mark.slow
def test_a_null_setting_is_a_column_of_its_own():
    """A varied key left null (fresh weights: model.pretrained null) is a value like any other."""
    rows = [
        {"role": "grid", "status": "complete", "model.pretrained": p, "model.freeze": "none"}
        | {"asr": a}
        for p, a in (("imagenet", 0.9), ("imagenet", 0.9), (None, 0.5))
    ]
    keys = ["model.freeze", "model.pretrained"]
    lines = paper_tables(pd.DataFrame(rows), keys, keys, ["asr"]).splitlines()
    assert lines[0] == "| asr: model.freeze \\ model.pretrained | imagenet | null |"
    assert lines[2] == "| none | 0.900 [0.900, 0.900] | 0.500 |"
