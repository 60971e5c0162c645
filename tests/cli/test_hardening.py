"""Reproducibility, honest intervals and identical-trigger detection."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gridspecs import write_spec

from triggerlab.analysis.plots.grid_figures import line_figure
from triggerlab.analysis.results import write_results
from triggerlab.analysis.statistics import adjust_p_values, holm, interval
from triggerlab.catalogue.triggers import LinesSpec
from triggerlab.config import load_config, validate_config
from triggerlab.grid.plan import plan_grid, preflight, run_id
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import GridSpec, load_grid_spec
from triggerlab.run.experiment import run_experiment
from triggerlab.run.rundir import read_metrics
from triggerlab.triggers.overlay import bands


@pytest.mark.slow
def test_rerunning_a_grid_runs_config_reproduces_it_exactly(tmp_path):
    """The grid records its thread count in each run's config.yaml, so the run alone, in a
    process with another thread count, gives the same numbers."""
    spec = write_spec(tmp_path, grid={"poison.rate": [0.1]})
    run_grid(load_grid_spec(spec, ["base.train.epochs=2"]), tmp_path / "g", threads=2)
    (run,) = (tmp_path / "g" / "runs").iterdir()
    cfg = load_config(run / "config.yaml", [f"output.directory={tmp_path / 'again'}"])
    assert cfg.train.threads == 2  # conftest runs this process with one thread
    again = run_experiment(cfg)
    assert json.loads((run / "summary.json").read_text())["threads"] == 2
    grid_rows, rerun_rows = read_metrics(run / "metrics.csv"), again.history
    for a, b in zip(grid_rows, rerun_rows, strict=True):
        for name in ("train_loss", "clean_acc", "asr", "asr_all", "robust_acc"):
            assert a[name] == b[name], name


def test_run_ids_ignore_threads_and_settings_left_at_their_defaults():
    base = validate_config({"data": {"resize": 16}})
    explicit = validate_config({"data": {"resize": 16}, "train": {"momentum": 0.9, "threads": 4}})
    assert run_id(base) == run_id(explicit)
    assert run_id(base) != run_id(validate_config({"data": {"resize": 16}, "train": {"lr": 0.01}}))
    frame = validate_config({"trigger": {"kind": "frame"}})
    lines = validate_config({"trigger": {"kind": "lines"}})
    assert run_id(frame) != run_id(lines)  # a kind tag always counts, even at defaults


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


def test_the_preflight_warns_when_two_cells_draw_the_same_trigger():
    triggers = [{"kind": "frame", "thickness": t} for t in (0.0112, 0.0223, 0.0893)]
    spec = GridSpec(base={"data": {"resize": 64}}, grid={"trigger": triggers})
    with pytest.warns(UserWarning, match="draw identical triggers at this resolution") as caught:
        preflight(plan_grid(spec))
    assert "0.0112" in str(caught[0].message) and "0.0893" not in str(caught[0].message)
    distinct = GridSpec(base={"data": {"resize": 64}}, grid={"trigger.size": [2, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preflight(plan_grid(distinct))
    # the same test-time blend, poisoned differently (pieces, cover samples): two experiments
    blends = [{"kind": "blend", "opacity": 0.2}, {"kind": "adaptive_blend", "opacity": 0.2}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preflight(plan_grid(GridSpec(base={"data": {"resize": 32}}, grid={"trigger": blends})))


@settings(max_examples=150, deadline=None)
@given(count=st.integers(1, 60), thickness=st.integers(1, 4), side=st.integers(8, 96))
def test_accepted_line_counts_are_what_an_observer_counts(count, thickness, side):
    try:
        overlay = LinesSpec(count=count, thickness=thickness).build((1, side, side))
    except Exception as exc:  # refused: too many lines for the side
        assert "lines" in str(exc)
        return
    assert bands(overlay.mask[0, 0]) == count
