"""Figures and the HTML report from a real small grid, checked in headless Chromium."""

import os
import shutil
from pathlib import Path

import pytest
from support.gridspecs import write_spec
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec

runner = CliRunner()


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    spec = write_spec(
        folder,
        grid={
            "poison.rate": [0.05, 0.1],
            "trigger.size": [2, 3],
            "trigger.position": ["bottom_right", "center"],
        },
        repeats=2,
        clean_baseline=True,
    )
    outcome = run_grid(load_grid_spec(spec), folder / "grid", workers=2, threads=1)
    assert outcome.ok
    return folder / "grid"


@pytest.mark.slow
def test_plot_writes_every_figure_kind(grid_dir):
    result = runner.invoke(app, ["plot", str(grid_dir)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in (grid_dir / "figures").iterdir()}
    for stem in (
        "asr_vs_poison.rate_by_trigger.size",
        "asr_per_epoch",
        "asr_heatmap_poison.rate_x_trigger.size",
        "asr_by_position",
        "clean_acc_vs_poison.rate_by_trigger.size",
    ):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert (grid_dir / "figures" / "asr_per_epoch.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.slow
def test_plot_rejects_unknown_keys_and_metrics(grid_dir):
    bad_key = runner.invoke(app, ["plot", str(grid_dir), "--x", "train.lr"])
    assert bad_key.exit_code == 2 and "'train.lr' is not varied" in bad_key.stderr
    bad_metric = runner.invoke(app, ["plot", str(grid_dir), "--metric", "accuracy"])
    assert bad_metric.exit_code == 2 and "unknown metric(s) accuracy" in bad_metric.stderr


@pytest.mark.slow
def test_results_cli(grid_dir):
    result = runner.invoke(
        app, ["results", str(grid_dir), "--compare", "trigger.position=bottom_right,center"]
    )
    assert result.exit_code == 0, result.output
    for name in ("results.csv", "results.parquet", "summary.csv", "comparisons.csv"):
        assert (grid_dir / name).stat().st_size > 0
    import pandas as pd

    summary = pd.read_csv(grid_dir / "summary.csv")
    assert len(summary) == 8 and set(summary["n"]) == {2}
    assert "clean_acc_drop_mean" in summary and "asr_ci_high" in summary


@pytest.mark.slow
def test_report_is_self_contained(grid_dir):
    result = runner.invoke(app, ["report", str(grid_dir)])
    assert result.exit_code == 0, result.output
    html = (grid_dir / "report.html").read_text()
    for text in (
        "Results per cell",
        "Reporting checklist",
        "Attacker access",
        "Defense test",
        "trigger.position",
    ):
        assert text in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens offline
    # two metrics x four figure kinds, the stealth-vs-success frontier (the trigger varies),
    # and one gallery image per trigger (2 sizes x 2 positions)
    assert html.count("<img ") == 8 + 1 + 4
    assert "frontier_asr_vs_psnr_db" in html
    # what a reader sees: counts in words, labelled columns, figures captioned by their titles
    assert "runs (" in html and "complete" in html and '{"complete"' not in html
    assert '<th title="psnr_db">PSNR (per image)</th>' in html
    assert '<th class="key" title="poison.rate">poisoning rate' in html
    assert "<figcaption>attack success rate (ASR) per epoch, mean over repeats" in html
    assert "<figcaption>asr_per_epoch</figcaption>" not in html
    assert html.count('src="data:image/png;base64,') == html.count("<img ")


ANALYSIS_PROBE = """
import sys
from typer.testing import CliRunner
from triggerlab.cli import app
for command in ("results", "plot", "report", "leaderboard"):
    result = CliRunner().invoke(app, [command, sys.argv[1]])
    assert result.exit_code == 0, result.output
heavy = ("torch", "sklearn", "triggerlab.data.prepare", "triggerlab.run.experiment")
print(" ".join(m for m in heavy if m in sys.modules))
"""


@pytest.mark.slow
def test_results_plot_and_report_read_artefacts_only(grid_dir):
    """No torch, no dataset loaded, no engine: what the runs wrote is all they read."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ANALYSIS_PROBE, str(grid_dir)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.slow
def test_plot_draws_the_frontier_with_the_chosen_stealth_metric(grid_dir):
    result = runner.invoke(app, ["plot", str(grid_dir), "--stealth", "ssim"])
    assert result.exit_code == 0, result.output
    assert (grid_dir / "figures" / "frontier_asr_vs_ssim.png").stat().st_size > 0
    bad = runner.invoke(app, ["plot", str(grid_dir), "--stealth", "lpips"])
    assert bad.exit_code == 2 and "--stealth: expected one of psnr_db, ssim" in bad.stderr


def test_the_report_text_and_columns_follow_the_task_and_the_defence():
    import pandas as pd

    from triggerlab.analysis.report.sections import STYLE, results_note, summary_table

    gaze = pd.DataFrame({"attack_error": [3.0], "label_unit": ["degrees"]})
    note = results_note(gaze)
    assert "Errors are in degrees" in note and "ASR" not in note and "accuracy" not in note
    assert "attack success rate (ASR)" in results_note(pd.DataFrame({"asr": [0.5]}))
    summary = pd.DataFrame(
        {
            "defense": ["{kind: finetune}"],
            "n": [3],
            **{f"asr_after_{k}": [0.1] for k in ("mean", "std", "ci_low", "ci_high")},
            **{f"detection_auroc_{k}": [0.9] for k in ("mean", "std", "ci_low", "ci_high")},
            **{f"clean_acc_drop_{k}": [0.0123] for k in ("mean", "std", "ci_low", "ci_high")},
        }
    )
    html = summary_table(summary, ["defense"])
    assert "attack success rate (ASR) after the defence" in html
    assert "detection AUROC" in html and '<td class="key">finetune</td>' in html
    # numbers never break mid-value (0.971 ± / 0.006); a wide table scrolls inside its box
    assert html.startswith('<div class="wide"><table>') and '<td class="num">0.100 &plusmn;' in html
    assert '<td class="num">0.012 &plusmn; 0.012' in html  # a drop of a share: three decimals
    assert "td.num { white-space: nowrap; }" in STYLE and ".wide { overflow-x: auto; }" in STYLE


@pytest.mark.slow
def test_report_renders_in_headless_chromium(grid_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "Chromium and chromedriver are not installed (Debian packages chromium and "
            "chromium-driver; .ci/run installs them): the browser check of the report is skipped"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager go online
    report = grid_dir / "report.html"
    if not report.exists():
        runner.invoke(app, ["report", str(grid_dir)])
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(report.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
        )
        errors = [
            entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")
        ]
        title = driver.title
    finally:
        driver.quit()
    assert title.startswith("triggerlab report")
    assert len(images) == 13
    broken = [alt for complete, width, alt in images if not complete or width == 0]
    assert not broken, f"images that did not load: {broken}"
    assert not errors, f"console errors: {errors}"


@pytest.mark.slow
def test_checklist_describes_reference_000s_two_stages(tmp_path):
    import pandas as pd
    import yaml

    from triggerlab.analysis.report import checklist
    from triggerlab.grid.plan import plan_grid

    spec = tmp_path / "spec.yaml"
    base = {
        "data": {
            "name": "synthetic_gaze",
            "resize": 16,
            "split": "pretune_finetune",
            "test_subjects": [2],
            "finetune_count": 20,
            "options": {"count": 120, "subjects": 3},
        },
        "poison": {"target": [0.0, 0.3]},
        "train": {"finetune_epochs": 4},
    }
    spec.write_text(yaml.safe_dump({"base": base, "grid": {"trigger.size": [2, 3]}}))
    plan = plan_grid(load_grid_spec(spec))
    table = pd.DataFrame({"role": ["grid", "grid"], "clean_error": [5.0, 6.0]})
    text = checklist(plan, table)
    assert "in two stages (reference 000's protocol" in text
    assert "held-out one [2]" in text and "fine-tuned on 20 of its images for 4 epochs" in text
