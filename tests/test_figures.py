"""Figure layout on constructed tables: every panel and line that the data asks for is drawn."""

import itertools

import pandas as pd
import pytest

from triggerlab.plots.grid_figures import bars_figure, heatmap_figure, is_numeric, line_figure


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
