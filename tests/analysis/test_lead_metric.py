"""A grid can lead its tables, figures and report with ``asr_all`` (``lead_metric``): the
ASR that references 001's and 002's code report, named as such."""

import pytest
from support.gridspecs import BASE, write_spec

from triggerlab.analysis.lead import led
from triggerlab.analysis.report.sections import TABLE_METRICS, table_metrics
from triggerlab.errors import ConfigError
from triggerlab.grid.spec import load_grid_spec


def test_the_lead_goes_first_only_when_a_grid_sets_one():
    metrics = ["clean_acc", "asr", "asr_all", "robust_acc"]
    assert led(metrics, None) == metrics  # grids without the setting print as before
    assert led(metrics, "asr_all") == ["asr_all", "clean_acc", "asr", "robust_acc"]
    assert table_metrics("asr") == TABLE_METRICS
    columns = table_metrics("asr_all")
    assert columns.index("asr_all") == columns.index("asr") - 1 == TABLE_METRICS.index("asr")


def test_an_unknown_lead_metric_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="lead_metric"):
        load_grid_spec(write_spec(tmp_path, lead_metric="accuracy"))


@pytest.mark.slow
def test_a_grid_led_by_asr_all_names_it_in_tables_figures_and_report(tmp_path):
    from triggerlab.analysis.plots.grid_figures import plot_grid
    from triggerlab.analysis.report import build_report
    from triggerlab.analysis.results import write_results
    from triggerlab.grid.runner import run_grid

    base = {**BASE, "poison": {**BASE["poison"], "sources": "all"}}  # as the references' code
    spec = write_spec(tmp_path, base=base, grid={"poison.rate": [0.05, 0.1]}, lead_metric="asr_all")
    assert run_grid(load_grid_spec(spec), tmp_path / "grid", workers=1, threads=1).ok
    paths = write_results(tmp_path / "grid", table_keys=["poison.rate"])
    header = paths["tables.md"].read_text().splitlines()[0]
    assert header.startswith("| poison.rate | asr_all | clean_acc | asr |")
    names = {p.name for p in plot_grid(tmp_path / "grid")}
    assert "asr_all_vs_poison.rate.png" in names and "asr_vs_poison.rate.png" not in names
    html = build_report(tmp_path / "grid").read_text()
    assert "This grid leads with ASR incl. target class (asr_all)" in html
    assert html.index('title="asr_all"') < html.index('title="asr"')
