"""The binomial interval of the pooled test predictions beside the interval over repeats:
by hand, in the summary, the tables and the report of a real small grid (issue 28, item 8)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support.gridspecs import write_spec

from triggerlab.analysis.binomial import pooled_binomial, repeats_for, repeats_note, wilson
from triggerlab.analysis.report import build_report
from triggerlab.analysis.results import collect, share_counts, summarize, write_results
from triggerlab.analysis.statistics import interval
from triggerlab.analysis.tables import cell_text, interval_legend
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    z = stats.norm.ppf(0.975)
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(708, 720), (0, 50), (50, 50), (7, 19)])
def test_wilson_interval_by_hand(k, n):
    assert wilson(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)


def test_two_repeats_of_0_981_the_issue_case():
    """Two runs at 0.997 and 0.964 of 360 test images: the interval over repeats spans
    nearly everything, the pooled predictions (706 of 720) pin the accuracy down."""
    shares = pd.Series([359 / 360, 347 / 360])
    trials = pd.Series([360, 360])
    over_repeats = interval(shares, "clean_acc")
    assert over_repeats["ci_low"] < 0.1 and over_repeats["ci_high"] > 0.999
    pooled = pooled_binomial(shares, trials)
    assert (pooled["k"], pooled["n"]) == (706, 720)
    assert pooled["share"] == pytest.approx(over_repeats["mean"])
    assert (pooled["low"], pooled["high"]) == pytest.approx(wilson_by_hand(706, 720))
    assert pooled["high"] - pooled["low"] < 0.03


def test_pooled_binomial_counts_each_runs_own_test_size():
    pooled = pooled_binomial(pd.Series([0.5, 0.75]), pd.Series([10, 40]))
    assert (pooled["k"], pooled["n"]) == (35, 50) and pooled["share"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("shares", "trials"),
    [
        ([0.9, 0.8], [100, None]),  # a run written before its count was recorded
        ([0.9, math.nan], [100, 100]),  # ASR of a run whose test set had no eligible image
        ([0.55, 0.8], [10, 10]),  # not a count of 10 images: no binomial reading made up
        ([], []),
    ],
)
def test_no_binomial_interval_without_honest_counts(shares, trials):
    pooled = pooled_binomial(pd.Series(shares, dtype=float), pd.Series(trials, dtype=float))
    assert math.isnan(pooled["low"]) and math.isnan(pooled["high"]) and math.isnan(pooled["n"])


def test_repeats_needed_for_a_width_by_hand():
    # t(0.975, n - 1) / sqrt(n) <= 1: n = 6 gives 2.571 / 2.449 = 1.05, n = 7 gives 0.925
    assert repeats_for(0.01, 0.01) == 7
    assert repeats_for(0.0, 0.01) == 2
    assert repeats_for(1.0, 1e-6) is None
    n = repeats_for(0.004, 0.01)
    assert stats.t.ppf(0.975, n - 1) * 0.004 / math.sqrt(n) <= 0.01
    assert stats.t.ppf(0.975, n - 2) * 0.004 / math.sqrt(n - 1) > 0.01


def test_the_repeats_note_names_the_factor_the_spread_and_the_goal():
    summary = pd.DataFrame({"n": [2, 2, 2], "clean_acc_std": [0.003, 0.01, 0.02]})
    note = repeats_note(summary, "clean_acc")
    assert "With 2 repeats a cell" in note and "t(0.975, 1) = 12.71" in note
    assert "(std 0.01)" in note and "about 7 repeats" in note and "roughly ±0.01" in note
    assert repeats_note(summary.assign(n=1), "clean_acc") == ""
    assert "agree exactly" in repeats_note(summary.assign(clean_acc_std=0.0), "clean_acc")


def test_counts_of_runs_written_before_the_attack_count():
    assert share_counts({"test_size": 360}, "classification") == {
        "test_size": 360,
        "attack_test_size": None,  # unknown: the non-target share of the test set
    }
    assert share_counts({"test_size": 90}, "regression")["attack_test_size"] == 90  # every image


def made_up_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "role": ["grid"] * 4,
            "status": ["complete"] * 4,
            "trigger.size": [1, 1, 3, 3],
            "clean_acc": [359 / 360, 347 / 360, 350 / 360, 352 / 360],
            "asr": [10 / 324, 20 / 324, 300 / 324, 310 / 324],
            "test_size": [360] * 4,
            "attack_test_size": [324, 324, None, 324],
        }
    )


@pytest.mark.slow
def test_summary_has_the_binomial_interval_beside_the_one_over_repeats():
    summary = summarize(made_up_table(), ["trigger.size"])
    first = summary.iloc[0]
    assert (first["clean_acc_binomial_low"], first["clean_acc_binomial_high"]) == pytest.approx(
        wilson_by_hand(706, 720)
    )
    assert first["clean_acc_binomial_n"] == 720 and first["asr_binomial_n"] == 648
    assert first["clean_acc_ci_low"] < 0.1  # the interval over repeats is still there
    assert math.isnan(summary.iloc[1]["asr_binomial_low"])  # one run's count is unknown
    assert not math.isnan(summary.iloc[1]["clean_acc_binomial_low"])


@pytest.mark.slow
def test_a_regression_share_counts_every_test_image():
    table = pd.DataFrame(
        {
            "role": ["grid"] * 2,
            "status": ["complete"] * 2,
            "attack_success_5": [0.25, 0.5],
            "attack_error": [9.0, 7.0],
            "test_size": [20, 20],
            "attack_test_size": [20, 20],
        }
    )
    (row,) = summarize(table, []).to_dict("records")
    assert row["attack_success_5_binomial_n"] == 40
    assert (row["attack_success_5_binomial_low"], row["attack_success_5_binomial_high"]) == (
        pytest.approx(wilson_by_hand(15, 40))
    )
    assert "attack_error_binomial_low" not in row  # an error in degrees is not a share


@pytest.mark.slow
def test_tables_label_both_intervals():
    table = made_up_table()
    first = table[table["trigger.size"] == 1]
    text = cell_text(first["clean_acc"], "clean_acc", first["test_size"])
    low, high = wilson_by_hand(706, 720)
    assert text.endswith(f"; binomial [{low:#.3g}, {high:#.3g}]")
    assert text.startswith("0.981 [")
    assert "binomial" not in cell_text(first["clean_acc"], "clean_acc")
    legend = interval_legend(table, ["clean_acc", "asr"])
    assert "[low, high]: 95 % interval over repeats" in legend
    assert "binomial [low, high]: Wilson 95 % interval of the test predictions pooled" in legend


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    # the rate zipped beside the size sweep, as configs/ref002_trigger_size.yaml does
    spec = write_spec(
        folder, grid={"trigger.size": [2, 3]}, zip=[{"poison.rate": [0.1]}], repeats=2
    )
    outcome = run_grid(load_grid_spec(spec), folder / "grid", workers=1, threads=1)
    assert outcome.ok
    return folder / "grid"


@pytest.mark.slow
def test_runs_record_the_test_images_asr_counts(grid_dir):
    from sklearn.datasets import load_digits

    table, _ = collect(grid_dir)
    run = next((grid_dir / "runs").iterdir())
    data = json.loads((run / "summary.json").read_text())["data"]
    # digits: 1,797 images, a seeded stratified 20 % test split (359); target class 0
    targets = load_digits().target
    assert data["test_size"] == 359
    assert data["test_size"] - data["attack_test_size"] == pytest.approx(
        359 * np.mean(targets == 0), abs=1
    )
    assert set(table["attack_test_size"]) == {data["attack_test_size"]}


@pytest.mark.slow
def test_report_shows_both_intervals_labelled(grid_dir):
    html = build_report(grid_dir).read_text()
    assert html.count('<small class="binomial"') >= 2 * 2  # two cells, clean accuracy and ASR
    assert "binomial [" in html
    assert "Wilson 95 % interval of the test predictions pooled over the repeats" in html
    assert "not how much another training would differ" in html
    assert "With 2 repeats a cell, the interval over repeats is as wide as" in html
    assert "t(0.975, 1) = 12.71" in html and "repeats would narrow it to roughly ±0.01" in html


@pytest.mark.slow
def test_summary_csv_and_tables_md_carry_the_binomial_interval(grid_dir):
    paths = write_results(grid_dir, table_keys=["trigger.size"], table_metrics=["clean_acc"])
    summary = pd.read_csv(paths["summary.csv"])
    assert set(summary["clean_acc_binomial_n"]) == {718}  # 359 test images x 2 repeats
    assert (summary["clean_acc_binomial_low"] <= summary["clean_acc_mean"]).all()
    tables = paths["tables.md"].read_text()
    assert tables.count("; binomial [") == 2 and "Wilson 95 % interval" in tables


@pytest.mark.slow
def test_the_report_names_a_key_of_one_value_and_plots_without_it(grid_dir):
    html = build_report(grid_dir).read_text()
    assert "poison.rate (poisoning rate (fraction of the training set); one value, 0.1)" in html
    assert "asr_vs_trigger.size" in html and "_vs_poison.rate" not in html
    assert "poison.rate = 0.1 in every run</figcaption>" in html
