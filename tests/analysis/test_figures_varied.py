"""Grid figures plot against the keys that vary; a key "varied" over one value is a caption.

Each shipped grid config is planned (no training) and given a results table of made-up
metrics in the shape ``results.collect`` builds; its figures are then checked on the
matplotlib objects: axis labels, legend titles, the x data of every line, the titles.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import REPO

from triggerlab.analysis.plots.axes import axis_label, split_varied
from triggerlab.analysis.plots.grid_figures import figure_caption, grid_figures
from triggerlab.analysis.results import cell_columns
from triggerlab.errors import ArgumentError
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.spec import is_grid_spec, load_grid_spec
from triggerlab.grid.store import manifest_of

# the made-up runs have no per-epoch logs: their epoch figures have no curve to name
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:No artists with labels:UserWarning"),
]  # every test here runs a pipeline
CONFIGS = REPO / "configs"
GRID_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml") if is_grid_spec(p))


def fake_runs(name: str) -> tuple[pd.DataFrame, list[str]]:
    """The finished grid runs of a shipped config, as ``collect`` tabulates them, with
    seeded made-up metrics (a defence study's repaired model's too)."""
    spec = load_grid_spec(CONFIGS / name)
    plan = [run for run in plan_grid(spec) if run.role == "grid"]
    varied = manifest_of(spec, plan)["varied"]
    rng = np.random.default_rng(0)
    rows = []
    for run in plan:
        row = {"run_id": run.run_id, "role": "grid", "status": "complete", "repeat": run.repeat}
        row.update(cell_columns(run.cell, varied))
        if isinstance(run.config.poison.target, list):  # a regression target vector
            row.update(clean_error=rng.uniform(5, 20), attack_error=rng.uniform(1, 30))
            row.update(attack_success_5=rng.uniform(), label_unit="degrees")
        else:
            row.update(clean_acc=rng.uniform(0.9, 1), asr=rng.uniform(), robust_acc=rng.uniform())
            if "defense" in varied:
                row.update(clean_acc_after=rng.uniform(0.8, 1), asr_after=rng.uniform())
        row.update(psnr_db=rng.uniform(10, 40), ssim=rng.uniform(0.5, 1))
        rows.append(row)
    return pd.DataFrame(rows), varied


def labels_of(figure) -> set[str]:
    """Every axis label and legend title of a figure (colour bars included)."""
    found = set()
    for ax in figure.axes:
        found |= {ax.get_xlabel(), ax.get_ylabel()}
        if ax.get_legend() is not None:
            found.add(ax.get_legend().get_title().get_text())
    for legend in figure.legends:
        found.add(legend.get_title().get_text())
    return found - {""}


@pytest.fixture(scope="module")
def empty_grid(tmp_path_factory):
    return tmp_path_factory.mktemp("grid")  # no run folders: no per-epoch logs, no ROC


@pytest.mark.parametrize("name", GRID_CONFIGS)
def test_shipped_grids_plot_only_the_keys_that_vary(name, empty_grid):
    runs, varied = fake_runs(name)
    shown, fixed = split_varied(runs, varied)
    figures = grid_figures(empty_grid, runs, varied)
    assert figures, name
    for file_name, figure in figures:
        labels = labels_of(figure)
        caption = figure_caption(figure)
        for key in fixed:
            assert axis_label(key) not in labels, (file_name, key)
            assert f"{key} = " in caption and "in every run" in caption, (file_name, caption)
            assert f"_{key}" not in file_name
            assert not re.search(rf"pooled over[^)]*{re.escape(key)}", caption), caption
        for ax in figure.axes:
            if ax.get_xlabel() in {axis_label(k) for k in shown} and ax.lines:
                key = next(k for k in shown if axis_label(k) == ax.get_xlabel())
                for line in ax.lines:  # every line spans the key's values
                    spanned = runs[key].nunique(dropna=False)  # null is a value of its own
                    assert len(set(line.get_xdata())) == spanned >= 2, file_name
        # a line figure's x axis is a key with several values
        if "_vs_" in file_name and not file_name.startswith("frontier"):
            x_label = figure.axes[0].get_xlabel()
            assert x_label in {axis_label(k) for k in shown}, (file_name, x_label)


def test_a_trigger_size_sweep_at_one_rate_plots_against_the_size():
    """Issue 28, item 7: configs/ref002_trigger_size.yaml drew 'clean accuracy vs
    poison.rate' with one x value (0.05) and ticks 0.048 ... 0.052."""
    runs, varied = fake_runs("ref002_trigger_size.yaml")
    assert set(varied) == {"trigger.size", "poison.rate"}  # the zip names the rate
    figures = dict(grid_figures(Path("/nonexistent"), runs, varied))
    assert not any("poison.rate" in name for name in figures)
    ax = figures["clean_acc_vs_trigger.size"].axes[0]
    assert ax.get_xlabel() == axis_label("trigger.size")
    (line,) = ax.lines
    assert list(line.get_xdata()) == [1, 3, 4, 5]
    assert ax.get_legend() is None  # no hue: the rate has nothing to tell apart
    assert "poison.rate = 0.05 in every run" in figure_caption(figures["asr_vs_trigger.size"])
    assert "poison.rate = 0.05 in every run" in figure_caption(figures["asr_per_epoch"])


def test_a_position_sweep_at_one_rate_draws_bars_not_a_line_through_categories():
    runs, varied = fake_runs("ref002_position.yaml")
    figures = dict(grid_figures(Path("/nonexistent"), runs, varied))
    assert "asr_by_trigger.position" in figures and "asr_by_position" not in figures
    bars = figures["asr_by_trigger.position"].axes[0]
    assert len(bars.patches) == 5 and bars.get_xlabel() == axis_label("trigger.position")
    assert "poison.rate = 0.05 in every run" in figure_caption(figures["asr_by_trigger.position"])


def test_a_constant_key_is_refused_as_an_axis_with_its_value(empty_grid):
    runs, varied = fake_runs("ref002_trigger_size.yaml")
    with pytest.raises(ArgumentError, match=r"'poison.rate' takes one value here \(0.05\)"):
        grid_figures(empty_grid, runs, varied, x="poison.rate")


def test_a_constant_hue_gave_a_single_line_and_pooled_the_real_one():
    """The ref003 sweeps zip one signal shape with the rates: the shape was the hue (one
    line) and the strength delta was pooled; now the lines are the deltas."""
    runs, varied = fake_runs("ref003_sine.yaml")
    figures = dict(grid_figures(Path("/nonexistent"), runs, varied))
    ax = figures["attack_error_vs_poison.rate_by_trigger.delta"].axes[0]
    assert len(ax.lines) == runs["trigger.delta"].nunique() == 4
    assert ax.get_legend().get_title().get_text() == axis_label("trigger.delta")
    assert "trigger.shape = sine in every run" in figure_caption(figures["attack_error_per_epoch"])
