"""Honest intervals: shares stay inside [0, 1], adjusted p-values by hand, and a figure over
one repeat that says it has no interval."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gridspecs import write_spec

from triggerlab.analysis.plots.grid_figures import line_figure
from triggerlab.analysis.results import write_results
from triggerlab.analysis.statistics import adjust_p_values, holm, interval
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8))
def test_intervals_of_shares_stay_inside_zero_and_one(values):
    result = interval(pd.Series(values), "asr")
    assert 0.0 <= result["ci_low"] <= result["ci_high"] <= 1.0


def test_an_interval_of_identical_shares_has_no_width():
    result = interval(pd.Series([0.0, 0.0, 0.0]), "asr")
    assert result["ci_low"] == result["ci_high"] == 0.0


def test_unbounded_metrics_keep_the_t_interval():
    result = interval(pd.Series([-3.0, 5.0]), "clean_acc_drop")
    assert result["ci_low"] < -3.0 and result["ci_high"] > 5.0


def test_holm_and_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> cummax
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    frame = adjust_p_values(pd.DataFrame({"p": [0.01, 0.04, 0.03, 0.005, math.nan]}))
    # BH: p_(i) * 4 / i from the largest down: 0.04, 0.04, 0.02, 0.02
    assert frame["p_bh"].tolist()[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert math.isnan(frame["p_holm"].iloc[4])


@pytest.mark.slow
def test_comparisons_report_adjusted_p_values(tmp_path):
    spec = write_spec(tmp_path, grid={"trigger.size": [2, 3]}, repeats=2)
    run_grid(load_grid_spec(spec), tmp_path / "g")
    paths = write_results(tmp_path / "g", ["trigger.size=2,3"])
    comparisons = pd.read_csv(paths["comparisons.csv"])
    assert {"p", "p_holm", "p_bh"} <= set(comparisons)
    known = comparisons.dropna(subset=["p"])
    assert (known["p_holm"] >= known["p"] - 1e-12).all() and (known["p_holm"] <= 1).all()


def test_a_figure_over_one_repeat_says_it_has_no_interval():
    runs = pd.DataFrame({"poison.rate": [0.01, 0.1], "asr": [0.1, 0.9]})
    title = line_figure(runs, ["poison.rate"], "poison.rate", None, "asr").axes[0].get_title()
    assert "one run per cell: no interval" in title
    twice = pd.concat([runs, runs.assign(asr=[0.2, 0.8])])
    title = line_figure(twice, ["poison.rate"], "poison.rate", None, "asr").axes[0].get_title()
    assert "mean and 95 % CI (logit-scale t" in title
