"""A SIG run with every poisoning setting at its default runs its paper's clean-label protocol
on the default digits, and says so in summary.json and in the printed table."""

import csv
import json

import pytest
from typer.testing import CliRunner

from triggerlab.cli import app

runner = CliRunner()


def invoke(tmp_path, *settings):
    args = ["run", "--out", str(tmp_path), "--set", "train.epochs=1", "--set", "output.name=r"]
    for item in settings:
        args += ["--set", item]
    return runner.invoke(app, args, env={"COLUMNS": "200"})


@pytest.mark.slow
def test_sig_by_default_poisons_half_the_target_class_with_labels_kept(tmp_path):
    result = invoke(tmp_path, "trigger.kind=signal")
    assert result.exit_code == 0, result.output
    assert "label mode" in result.output and "clean_label" in result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    poison = summary["poison"]
    assert poison["label_mode"] == "clean_label" and poison["rate"] == 0.05
    assert poison["count"] == round(0.05 * poison["clean_train_size"])
    with (tmp_path / "r" / "poisoned_indices.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == poison["count"]
    assert {(r["original_label"], r["new_label"]) for r in rows} == {("0", "0")}


@pytest.mark.slow
def test_sig_named_all_to_one_runs_the_dirty_label_form(tmp_path):
    result = invoke(tmp_path, "trigger.kind=signal", "poison.label_mode=all_to_one")
    assert result.exit_code == 0, result.output
    poison = json.loads((tmp_path / "r" / "summary.json").read_text())["poison"]
    assert poison["label_mode"] == "all_to_one" and poison["rate"] == 0.1
    with (tmp_path / "r" / "poisoned_indices.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["original_label"] != "0" and r["new_label"] == "0" for r in rows)
