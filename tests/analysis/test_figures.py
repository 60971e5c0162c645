"""Figure layout on constructed tables: every panel and line that the data asks for is drawn."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from triggerlab.analysis.cell_labels import short_labels
from triggerlab.analysis.plots.frontier_figures import frontier_figure, pareto_front
from triggerlab.analysis.plots.grid_figures import (
    bars_figure,
    heatmap_figure,
    is_numeric,
    line_figure,
)
from triggerlab.figures import trigger_preview_figure


def table() -> pd.DataFrame:
    rows = []
    cells = itertools.product(
        [0.01, 0.02], [2, 3], ["tl", "tr", "c", "bl", "br"], ["white", "black", "green"]
    )
    for rate, size, position, colour in cells:
        for repeat in range(2):
            rows.append(
                {
                    "poison.rate": rate,
                    "trigger.size": size,
                    "trigger.position": position,
                    "trigger.color": colour,
                    "asr": 0.1 * size + rate + 0.01 * repeat,
                }
            )
    return pd.DataFrame(rows)


VARIED = ["poison.rate", "trigger.size", "trigger.position", "trigger.color"]


def test_heatmap_has_one_panel_per_position_and_colour():
    fig = heatmap_figure(table(), VARIED, "poison.rate", "trigger.size", "asr")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 15  # reference 001: 5 positions x 3 colours
    titles = {ax.get_title() for ax in panels}
    assert "position=br, color=green" in titles
    grid = panels[0].images[0].get_array()
    assert grid.shape == (2, 2)
    assert grid[1, 0] == pytest.approx(0.1 * 3 + 0.01 + 0.005)  # size 3, rate 0.01, mean of repeats


def test_lines_and_bars_name_what_they_pool():
    fig = line_figure(table(), VARIED, "poison.rate", "trigger.size", "asr")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and "pooled over trigger.position, trigger.color" in ax.get_title()
    assert ax.get_xlabel().startswith("poisoning rate")
    bars = bars_figure(table(), VARIED, "trigger.position", "asr").axes[0]
    assert len(bars.patches) == 5


def test_numeric_detection():
    assert is_numeric(pd.Series([1, 2.5])) and not is_numeric(pd.Series(["a", 1]))
    assert not is_numeric(pd.Series([True, False]))


# ---- what a reader sees: scales, units, labels, legends (issue: figures that read right) ----


def gaze_runs() -> pd.DataFrame:
    rows = []
    for rate, size, repeat in itertools.product([0.05, 0.1], [2, 4], range(2)):
        rows.append(
            {
                "poison.rate": rate,
                "trigger.size": size,
                "clean_error": 19.8 + size * 0.1 + repeat * 0.05,
                "clean_acc": 0.96 + 0.01 * size / 2,
                "label_unit": "degrees",
            }
        )
    return pd.DataFrame(rows)


def test_regression_heatmap_is_scaled_by_its_data_and_names_its_unit():
    fig = heatmap_figure(
        gaze_runs(), ["poison.rate", "trigger.size"], "poison.rate", "trigger.size", "clean_error"
    )
    image = next(ax for ax in fig.axes if ax.images).images[0]
    low, high = image.get_clim()
    assert low == pytest.approx(19.8 + 0.2 + 0.025) and high == pytest.approx(19.8 + 0.4 + 0.025)
    colorbar = fig.axes[-1]
    assert "clean error (degrees)" in colorbar.get_ylabel()
    assert "the data's range" in colorbar.get_ylabel()


def test_narrow_accuracies_are_zoomed_with_a_note_and_wide_ones_keep_zero_to_one():
    fig = line_figure(
        gaze_runs(), ["poison.rate", "trigger.size"], "poison.rate", "trigger.size", "clean_acc"
    )
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert 0.9 < low < 0.97 and 0.98 < high <= 1.005
    assert "axis zoomed to the data" in ax.get_title()
    spread = table().assign(asr=lambda t: np.where(t["trigger.size"] == 2, 0.1, 0.9))
    wide = line_figure(spread, VARIED, "poison.rate", "trigger.size", "asr").axes[0]
    assert wide.get_ylim() == pytest.approx((-0.02, 1.02))


def test_legends_sit_outside_the_axes():
    fig = line_figure(table(), VARIED, "poison.rate", "trigger.size", "asr")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1


def test_whole_trigger_axes_get_short_labels_and_horizontal_bars():
    specs = [
        "{kind: patch, color: red, size: 0.04}",
        "{kind: patch, color: blue, size: 0.04}",
        "{kind: frame, color: red, thickness: 0.01}",
        "{kind: frame, color: red, thickness: 0.09}",
        "{kind: lines, count: 10}",
        "{kind: signal, delta: 0.1}",
        "{kind: random, sizes: [0.04]}",
    ]
    assert short_labels(specs) == {
        specs[0]: "patch color=red",
        specs[1]: "patch color=blue",
        specs[2]: "frame thickness=0.01",
        specs[3]: "frame thickness=0.09",
        specs[4]: "lines",
        specs[5]: "signal",
        specs[6]: "random",
    }
    runs = pd.DataFrame({"trigger": specs * 2, "asr": [0.5] * 14})
    ax = bars_figure(runs, ["trigger"], "trigger", "asr").axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == [
        "patch color=red",
        "patch color=blue",
    ]
    assert len(ax.patches) == 7 and ax.get_xlim() == pytest.approx((0, 1.02))


def test_pareto_front_by_hand():
    # (stealth, success): b dominates a; c and b trade off; d is dominated by c
    x = np.array([20.0, 25.0, 30.0, 28.0])
    y = np.array([0.5, 0.9, 0.6, 0.55])
    assert pareto_front(x, y, x_higher_better=True).tolist() == [1, 2]
    assert pareto_front(x, y, x_higher_better=False).tolist() == [0, 1]


def test_frontier_figure_colours_kinds_and_rings_the_front():
    rows = []
    for kind, strength, psnr, asr in [
        ("blend", 0.1, 30.0, 0.4),
        ("blend", 0.2, 24.0, 0.9),
        ("warp", 0.5, 33.0, 0.5),
        ("warp", 1.0, 29.0, 0.45),
    ]:
        for repeat in range(3):
            rows.append(
                {
                    "trigger": f"{{kind: {kind}, s: {strength}}}",
                    "trigger.kind": kind,
                    "psnr_db": psnr,
                    "asr": asr + 0.01 * repeat,
                }
            )
    fig = frontier_figure(pd.DataFrame(rows), ["trigger"], "psnr_db", "asr")
    ax = fig.axes[0]
    texts = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"blend", "warp", "Pareto front"} <= texts
    # the front, numbered by stealth: 24 dB at 0.91, 33 dB at 0.51
    assert [t.get_text() for t in ax.texts] == [
        "1",
        "2",
        "Pareto front\n1  blend s=0.2\n2  warp s=0.5",
    ]
    assert "PSNR (per image) (dB)" in ax.get_xlabel() and "stealthier ->" in ax.get_xlabel()


def test_preview_title_and_caption_stay_inside_the_figure():
    clean = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    title = "reflection: " + ", ".join(f"parameter_{i}=value_{i}" for i in range(12))
    fig = trigger_preview_figure(clean, clean + 40, title, "L0 1.0 " * 30)
    fig.canvas.draw()
    box = fig.bbox
    for text in (fig._suptitle, fig._supxlabel):
        extent = text.get_window_extent()
        assert extent.x0 >= box.x0 and extent.x1 <= box.x1


def defense_runs() -> pd.DataFrame:
    """Three defences at a clean control (rate 0) and an attack (0.1), three repeats: a
    repair, a detector (nothing to measure after it) and an inspection that repaired once."""
    rows = []
    for rate, repeat in itertools.product([0.0, 0.1], range(3)):
        asr = 0.98 + 0.01 * repeat if rate else 0.01
        for spec, kind, after in (
            ("{kind: none}", "none", np.nan),
            ("{clean_fraction: 0.1, kind: finetune}", "finetune", asr / 2),
            ("{kind: strip}", "strip", np.nan),
            ("{kind: neural_cleanse}", "neural_cleanse", 0.2 if repeat == 0 and rate else np.nan),
        ):
            rows.append(
                {"defense": spec, "defense.kind": kind, "poison.rate": rate}
                | {"asr": asr, "asr_after": after}
            )
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_defence_studies_show_each_defence_before_and_after():
    from triggerlab.analysis.plots.defense_figures import defense_figure

    runs = defense_runs()
    fig = defense_figure(runs, ["defense", "poison.rate"], "asr_after")
    clean, attacked = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["poison.rate = 0.0", "poison.rate = 0.1"]
    ticks = [t.get_text() for t in clean.get_yticklabels()]
    assert ticks == ["none", "finetune", "strip", "neural_cleanse"]
    points = {
        (round(float(line.get_ydata()[0]), 2), round(float(line.get_xdata()[0]), 4))
        for line in attacked.lines
        if line.get_marker() == "o"
    }
    # rows 0..3 from the top; before at row - 0.15, after at row + 0.15
    assert (1.15, round((0.98 + 0.99 + 1.0) / 6, 4)) in points  # finetune halved the ASR
    assert (3.15, 0.2) in points and not any(y == 2.15 for y, _ in points)  # strip: none
    notes = [t.get_text() for t in attacked.texts]
    assert notes == ["no defence", "no repair", "repaired in 1 of 3 runs"]
    assert "as trained and after each defence" in fig.get_suptitle()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["as trained", "after the defence"]
    # more than the defence and one key varied, or a metric without an *_after: lines instead
    runs["trigger.size"] = 3
    assert defense_figure(runs, ["defense", "poison.rate", "trigger.size"], "asr_after") is None
    assert defense_figure(runs, ["defense", "poison.rate"], "asr") is None
