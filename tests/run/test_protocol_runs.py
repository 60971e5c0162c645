"""Subject protocols from the config: held-out subjects, and reference 000's two-stage runs."""

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import DataConfig
from triggerlab.data.prepare import prepare_data
from triggerlab.errors import ConfigError

runner = CliRunner()
OPTIONS = {"count": 160, "subjects": 4}  # 40 images per subject, subjects 0 to 3
TINY = ["data.name=synthetic_gaze", "data.resize=16", "data.options={count: 160, subjects: 4}"]


def gaze(**settings):
    return prepare_data(
        DataConfig(name="synthetic_gaze", resize=(16, 16), options=OPTIONS, **settings), 0
    )


def subjects(data):
    return set(data.groups.tolist())


def test_pretune_finetune_holds_out_the_last_subject_by_default():
    split = gaze(split="pretune_finetune", finetune_count=10)
    assert subjects(split.train) == {0, 1, 2} and len(split.train) == 120
    assert subjects(split.finetune) == {3} and len(split.finetune) == 10
    assert subjects(split.test) == {3} and len(split.test) == 30
    chosen = gaze(split="pretune_finetune", test_subjects=[1], finetune_count=25)
    assert subjects(chosen.finetune) == subjects(chosen.test) == {1}
    assert (len(chosen.finetune), len(chosen.test)) == (25, 15)
    # the fine-tuning images and the test images are different renders of the one subject
    both = torch.cat([chosen.finetune.images, chosen.test.images]).flatten(1)
    assert torch.unique(both, dim=0).shape[0] == 40


def test_test_subjects_pick_the_held_out_subjects_of_a_random_split():
    split = gaze(split="random", test_subjects=[0, 2])
    assert subjects(split.test) == {0, 2} and subjects(split.train) == {1, 3}
    assert split.finetune is None
    one = gaze(test_subjects=[3])  # no official split: "official" falls back to random
    assert subjects(one.test) == {3} and len(one.train) == 120


def test_protocol_settings_are_checked():
    with pytest.raises(ValueError, match="split pretune_finetune holds out one subject"):
        DataConfig(name="synthetic_gaze", split="pretune_finetune", test_subjects=[1, 2])
    with pytest.raises(ConfigError, match="fine-tune count 40 must be between 1 and 39"):
        gaze(split="pretune_finetune", finetune_count=40)
    with pytest.raises(ConfigError, match=r"held-out subject 7 does not exist"):
        gaze(split="pretune_finetune", test_subjects=[7])
    with pytest.raises(ConfigError, match=r"test subjects \[7\] do not exist"):
        gaze(test_subjects=[7])
    digits = DataConfig(name="digits", split="pretune_finetune")
    with pytest.raises(ConfigError, match="protocol 'pretune_finetune' needs subject ids"):
        prepare_data(digits, 0)
    no_subjects = r"'subject split \(data.test_subjects\)' needs subject ids"
    with pytest.raises(ConfigError, match=no_subjects):
        prepare_data(DataConfig(name="digits", test_subjects=[1]), 0)


def test_official_splits_keep_their_subjects_unless_asked(tmp_path):
    import numpy as np

    for name in ("BIWI_train.npz", "BIWI_test.npz"):
        np.savez(
            tmp_path / name,
            image=np.zeros((4, 32, 32, 3), np.uint8),
            pose=np.zeros((4, 3), np.float32),
        )
    with pytest.raises(ConfigError, match="'biwi' has an official train/test split"):
        prepare_data(DataConfig(name="biwi", root=tmp_path, test_subjects=[1]), 0)


def invoke(tmp_path, *settings):
    args = ["run", "-q", "--out", str(tmp_path)]
    for item in [*TINY, *settings]:
        args += ["--set", item]
    return runner.invoke(app, args, env={"COLUMNS": "200"})


@pytest.mark.slow
def test_two_stage_run_continues_the_epochs_on_the_held_out_subject(tmp_path):
    result = invoke(
        tmp_path,
        "data.split=pretune_finetune",
        "data.finetune_count=20",
        "poison.target=[-0.3, 0.4]",
        "trigger.kind=lines",
        "trigger.count=4",
        "train.epochs=2",
        "train.finetune_epochs=3",
        "train.finetune_lr=0.0005",
        "output.name=ref000",
    )
    assert result.exit_code == 0, result.output
    assert "fine-tuning (subject 3)" in result.output
    assert "2 of 20 poisoned, 3 epochs" in result.output
    run = tmp_path / "ref000"
    summary = json.loads((run / "summary.json").read_text())
    protocol = summary["protocol"]
    assert protocol["held_out_subject"] == 3 and protocol["pretune_size"] == 120
    assert (protocol["finetune_size"], protocol["finetune_poisoned"]) == (20, 2)
    assert (protocol["pretune_epochs"], protocol["finetune_epochs"]) == (2, 3)
    assert protocol["finetune_lr"] == 0.0005 and summary["epochs"] == 5
    assert summary["data"]["test_size"] == 20 and summary["poison"]["count"] == 12
    with (run / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert float(rows[1]["clean_error"]) == pytest.approx(protocol["after_pretune"]["clean_error"])
    assert float(rows[-1]["attack_error"]) == pytest.approx(summary["final"]["attack_error"])
    poisoned = (run / "poisoned_indices_finetune.csv").read_text().splitlines()
    assert len(poisoned) == 3 and poisoned[1].endswith(",-0.3;0.4")
    assert (run / "poisoned_indices.csv").read_text().count("\n") == 13


@pytest.mark.slow
def test_two_stage_run_of_the_classification_variant(tmp_path):
    result = invoke(
        tmp_path,
        "data.name=synthetic_headpose",
        "data.split=pretune_finetune",
        "data.finetune_count=10",
        "poison.target=[0, 1, 2]",
        "trigger.kind=signal",
        "train.loss=cross_entropy",
        "evaluation.bins=3",
        "evaluation.bin_output=pitch",
        "train.epochs=1",
        "train.finetune_epochs=1",
        "output.name=bins",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "bins" / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["protocol"]["finetune_poisoned"] == 1
    # the fine-tuning labels are bins too: the target vector became its bin, 1 (the middle)
    row = (tmp_path / "bins" / "poisoned_indices_finetune.csv").read_text().splitlines()[1]
    assert row.endswith(",1")


@pytest.mark.slow
def test_a_protocol_without_subjects_exits_2_and_writes_nothing(tmp_path):
    args = ["run", "--out", str(tmp_path / "runs"), "--set", "data.split=pretune_finetune"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "protocol 'pretune_finetune' needs subject ids" in result.stderr
    assert not (tmp_path / "runs").exists()
