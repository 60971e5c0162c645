"""``triggerlab triggers lf-pattern``: the clean model trained once and shared, the pattern
written in BackdoorBench's format, and a run that uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import load_config
from triggerlab.run.experiment import run_experiment
from triggerlab.tools.low_frequency import CLEAN, generate_lf_pattern

TINY = ["train.epochs=1", "poison.target=3"]


@pytest.mark.slow
def test_the_clean_model_is_trained_once_and_the_pattern_drives_a_run(tmp_path):
    cfg = load_config(None, TINY)
    first = generate_lf_pattern(cfg, tmp_path / "a.npy", tmp_path / "cache", 4, 2, 1)
    assert first.trained and first.passes == 1 and len(first.fooling_rates) == 1
    assert first.target == 3
    pattern = np.load(tmp_path / "a.npy")
    assert pattern.dtype == np.uint8 and pattern.shape == (16, 16, 1)
    assert pattern.min() == 0 and pattern.max() == 51  # min-max to [0, 0.2] of 255
    # another target, the same data, model and training: the clean model is loaded
    other = load_config(None, [*TINY, "poison.target=5", "trigger.kind=frame"])
    second = generate_lf_pattern(other, tmp_path / "b.npy", tmp_path / "cache", 4, 2, 1)
    assert not second.trained and second.key == first.key and second.target == 5
    assert len(list((tmp_path / "cache" / CLEAN).glob("*.safetensors"))) == 1
    run = load_config(
        None,
        [
            *TINY,
            "trigger.kind=low_frequency",
            "trigger.pattern=uap",
            f"trigger.path={tmp_path / 'a.npy'}",
        ],
    )
    run_experiment(run, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["stealth"]["linf_mean"] > 0


def test_the_command_refuses_a_file_that_is_not_npy(tmp_path):
    result = CliRunner().invoke(
        app, ["triggers", "lf-pattern", "--out", str(tmp_path / "p.png"), "--cache", str(tmp_path)]
    )
    assert result.exit_code == 2 and "must end in .npy" in result.output
    assert not (tmp_path / "clean_models").exists()


@pytest.mark.slow
def test_a_preview_of_the_default_trains_nothing_and_says_what_it_shows(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lf.png"
    result = CliRunner().invoke(
        app, ["triggers", "preview", "--trigger", "kind=low_frequency", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert out.is_file() and "shown as random_smooth" in said
    assert not (tmp_path / "cache").exists()
