"""Regression beside classification: metrics by hand, validation, splits and a whole run."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from triggerlab.attack.poison import poison_dataset
from triggerlab.attack.tasks import RegressionTask
from triggerlab.catalogue.triggers import PatchSpec
from triggerlab.cli import app
from triggerlab.config import DataConfig, PoisonConfig, load_config
from triggerlab.data.dataset import ImageDataset
from triggerlab.data.gaze import angular_error
from triggerlab.data.labels import GAZE, HEADPOSE, Labels
from triggerlab.data.prepare import prepare_data
from triggerlab.errors import ConfigError
from triggerlab.run.prepare import make_task, setup_task

DEG = math.pi / 180
runner = CliRunner()
TINY = ["data.name=synthetic_gaze", "data.resize=16", "data.options={count: 120, subjects: 4}"]


def test_gaze_metrics_by_hand():
    task = RegressionTask(
        PoisonConfig(target=[0.0, 30 * DEG]), Labels(("pitch", "yaw"), GAZE), tolerances=[5, 10]
    )
    labels = torch.zeros(2, 2)
    clean = torch.tensor([[0.0, 10 * DEG], [0.0, 0.0]])
    triggered = torch.tensor([[0.0, 30 * DEG], [0.0, 22 * DEG]])
    m = task.metrics(labels, clean, triggered)
    assert m["clean_error"] == pytest.approx(5.0, abs=1e-4)  # (10 + 0) / 2 degrees
    assert m["attack_error"] == pytest.approx(4.0, abs=1e-4)  # (0 + 8) / 2
    assert m["attack_success_5"] == 0.5 and m["attack_success_10"] == 1.0
    assert m["mean_shift"] == pytest.approx(21.0, abs=1e-4)  # (20 - 0 + 30 - 8) / 2
    assert "clean_mae_yaw" not in m


def test_angular_error_of_known_vectors():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10 * DEG, 0.0]])
    b = torch.tensor([[0.0, 90 * DEG], [0.0, 0.0], [-10 * DEG, 0.0]])
    assert angular_error(a, b).tolist() == pytest.approx([90.0, 0.0, 20.0], abs=1e-5)


def test_head_pose_metrics_by_hand():
    task = RegressionTask(
        PoisonConfig(target=[0.0, 0.0, 0.0]),
        Labels(("yaw", "pitch", "roll"), HEADPOSE),
        tolerances=[2.5],
    )
    labels = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    clean = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
    triggered = torch.tensor([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    m = task.metrics(labels, clean, triggered)
    assert (m["clean_mae_yaw"], m["clean_mae_pitch"], m["clean_mae_roll"]) == pytest.approx(
        (0.5, 1.0, 1.5)
    )
    assert m["clean_error"] == pytest.approx(1.0)  # mean of per-sample MAEs 2 and 0
    assert m["attack_error"] == pytest.approx(2.0)
    assert m["attack_success_2.5"] == 0.5
    assert m["mean_shift"] == pytest.approx(((2 - 1) + (10 / 3 - 3)) / 2)


def regression_split(**options):
    return prepare_data(
        DataConfig(
            name="synthetic_gaze", resize=(16, 16), options={"count": 120, "subjects": 4, **options}
        ),
        0,
    )


def test_synthetic_data_is_split_by_subject():
    split = regression_split()
    assert split.is_regression and split.num_outputs == 2 and split.label_kind.name == "gaze"
    assert not set(split.train.groups.tolist()) & set(split.test.groups.tolist())
    assert len(split.test) == 30  # one of four subjects


def test_make_task_validates_the_target_and_loss():
    split = regression_split()
    task = make_task(load_config(None, [*TINY, "poison.target=[0.0, 0.1]"]), split)
    assert isinstance(task, RegressionTask) and task.num_outputs == 2 and task.loss_name == "l1"
    with pytest.raises(
        ConfigError, match=r"poison.target: expected 2 values \(pitch, yaw\), got 3"
    ):
        make_task(load_config(None, [*TINY, "poison.target=[0, 0, 0]"]), split)
    with pytest.raises(ConfigError, match="expected a list of 2 values"):
        make_task(load_config(None, TINY), split)
    with pytest.raises(ConfigError, match="classification variant; set evaluation.bins"):
        setup_task(
            load_config(None, [*TINY, "poison.target=[0, 0]", "train.loss=cross_entropy"]), split
        )
    with pytest.raises(ConfigError, match="regression supports all_to_one"):
        make_task(
            load_config(None, [*TINY, "poison.target=[0, 0]", "poison.label_mode=clean_label"]),
            split,
        )
    with pytest.warns(UserWarning, match="outside the training labels' range for pitch, yaw"):
        make_task(load_config(None, [*TINY, "poison.target=[3.0, 3.0]"]), split)
    digits = prepare_data(DataConfig(name="digits", resize=(16, 16)), 0)
    with pytest.raises(
        ConfigError, match="poison.target: .* is a vector, but this dataset has classes"
    ):
        make_task(load_config(None, ["poison.target=[0.5]"]), digits)
    with pytest.raises(ConfigError, match="'l1' is a regression loss"):
        make_task(load_config(None, ["train.loss=l1"]), digits)


def test_regression_poisoning_writes_the_target_vector():
    data = ImageDataset(torch.zeros(20, 1, 6, 6, dtype=torch.uint8), torch.randn(20, 3))
    trigger = PatchSpec(size=2).build((1, 6, 6))
    task = RegressionTask(PoisonConfig(rate=0.25, target=[1.0, 2.0, 3.0]), Labels(("a", "b", "c")))
    result = poison_dataset(data, task, trigger, torch.Generator())
    assert result.count == 5
    assert torch.equal(result.new_labels, torch.tensor([[1.0, 2.0, 3.0]]).expand(5, 3))
    assert torch.equal(result.train.targets[result.indices], result.new_labels)


@pytest.mark.slow
def test_regression_run_through_the_cli(tmp_path):
    args = ["run", "-q", "--out", str(tmp_path)]
    for item in [
        *TINY,
        "poison.target=[0.0, 0.3]",
        "trigger.kind=frame",
        "train.epochs=2",
        "output.name=gaze",
    ]:
        args += ["--set", item]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "regression run (gaze): frame trigger on synthetic_gaze" in result.output
    assert "attack error (to the target) (degrees)" in result.output
    assert "attack success within 5 degrees" in result.output
    assert "BadNets" not in result.output and "ASR" not in result.output
    summary = json.loads((tmp_path / "gaze" / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["data"]["label_kind"] == "gaze"
    assert set(summary["final"]) >= {
        "clean_error",
        "attack_error",
        "attack_success_5",
        "attack_success_10",
    }
    header = (tmp_path / "gaze" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,clean_error,attack_error,attack_success_5")
    rows = (tmp_path / "gaze" / "poisoned_indices.csv").read_text().splitlines()
    assert rows[1].endswith(",0;0.3") and len(rows) == 1 + summary["poison"]["count"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["poison.target=[0, 0, 0]"], "poison.target: expected 2 values (pitch, yaw), got 3"),
        (
            ["poison.target=[0, 0]", "evaluation.tolerances=[0]"],
            "evaluation.tolerances: tolerances must be positive",
        ),
        (
            ["poison.target=[0, 0]", "data.options={count: many}"],
            "data.options.count: expected int",
        ),
        (
            ["poison.target=[0, 0]", "data.options={count: 2, subjects: 4}"],
            "need at least one image per subject",
        ),
        (["poison.target=0.5"], "poison.target: expected a class index >= 0 or a list of numbers"),
    ],
)
def test_bad_regression_settings_exit_2(tmp_path, settings, message):
    args = ["run", "--out", str(tmp_path / "runs")]
    for item in [*TINY, *settings]:  # a later --set replaces an earlier one
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_biwi_npz_pair_is_an_official_split(tmp_path):
    for name, n in (("BIWI_train.npz", 6), ("BIWI_test.npz", 4)):
        np.savez(
            tmp_path / name,
            image=np.zeros((n, 64, 64, 3), np.uint8),
            pose=np.zeros((n, 3), np.float32),
        )
    split = prepare_data(DataConfig(name="biwi", root=tmp_path, resize=(32, 32)), 0)
    assert (len(split.train), len(split.test)) == (6, 4)
    assert split.label_kind.name == "headpose" and split.target_names == ["yaw", "pitch", "roll"]
    single = prepare_data(
        DataConfig(name="biwi", root=tmp_path / "BIWI_train.npz", test_fraction=0.5), 0
    )
    assert len(single.train) + len(single.test) == 6


def test_bin_assignment_at_the_edges():
    from triggerlab.attack.tasks import confusion_counts
    from triggerlab.data.bins import Bins

    bins = Bins(index=0, name="pitch", low=0.0, high=10.0, count=5)
    values = torch.tensor([[0.0], [1.99], [2.0], [9.99], [10.0], [-3.0], [15.0]])
    assert bins.assign(values).tolist() == [0, 0, 1, 4, 4, 0, 4]
    assert bins.edges() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    truth = torch.tensor([[1.0], [1.0], [5.0]])
    predicted = torch.tensor([[1.5], [3.0], [5.5]])
    confusion = confusion_counts(bins.assign(truth), bins.assign(predicted), bins.count)
    assert (
        confusion[0].tolist() == [1, 1, 0, 0, 0] and confusion[2, 2] == 1 and confusion.sum() == 3
    )


def test_bin_metrics_by_hand():
    from triggerlab.data.bins import Bins

    bins = Bins(index=1, name="pitch", low=-10.0, high=10.0, count=4)  # bins of 5 degrees
    task = RegressionTask(
        PoisonConfig(target=[0.0, 7.0, 0.0]), Labels(("yaw", "pitch", "roll"), HEADPOSE), bins=bins
    )
    labels = torch.tensor([[0.0, -8.0, 0.0], [0.0, 1.0, 0.0]])
    clean = torch.tensor([[0.0, -6.0, 0.0], [0.0, -1.0, 0.0]])  # bins 0 (right) and 1 (wrong)
    triggered = torch.tensor([[0.0, 9.0, 0.0], [0.0, 4.0, 0.0]])  # bins 3 (target's) and 2
    m = task.metrics(labels, clean, triggered)
    assert m["bin_acc"] == 0.5 and m["bin_asr"] == 0.5
    assert "bin_acc" in task.metric_names


@pytest.mark.slow
def test_discretised_run_writes_confusion_matrices(tmp_path):
    settings = [
        *TINY,
        "poison.target=[0.0, 0.0]",
        "train.epochs=1",
        "output.name=binned",
        "evaluation.bins=3",
        "evaluation.bin_output=yaw",
    ]
    args = ["run", "-q", "--out", str(tmp_path)]
    for item in settings:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "binned"
    with (run / "confusion_clean.csv").open(newline="") as handle:
        clean = list(csv.reader(handle))
    assert len(clean) == 4 and clean[0][0] == "true \\ predicted yaw" and len(clean[0]) == 4
    assert sum(int(v) for row in clean[1:] for v in row[1:]) == 30  # every test image, once
    assert (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert {"bin_acc", "bin_asr"} <= set(json.loads((run / "summary.json").read_text())["final"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["evaluation.bins=1"], "evaluation.bins: Input should be greater than or equal to 2"),
        (
            ["evaluation.bins=4", "evaluation.bin_output=roll"],
            "evaluation.bin_output: 'roll' is not an output",
        ),
        (
            ["evaluation.bins=4", "evaluation.bin_range=[1, 0]"],
            "bin_range [1.0, 0.0] must satisfy low < high",
        ),
    ],
)
def test_bad_discretisation_settings(tmp_path, settings, message):
    args = ["run", "--out", str(tmp_path / "runs")]
    for item in [*TINY, "poison.target=[0, 0]", *settings]:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_bins_are_for_regression_only():
    digits = prepare_data(DataConfig(name="digits", resize=(16, 16)), 0)
    with pytest.raises(
        ConfigError, match="evaluation.bins: the discretisation metric is for regression"
    ):
        make_task(load_config(None, ["evaluation.bins=4"]), digits)


@pytest.mark.slow
def test_reference_003_classification_variant_on_the_bins(tmp_path):
    settings = [
        *TINY,
        "poison.target=[0.0, 0.2]",
        "train.loss=cross_entropy",
        "evaluation.bins=3",
        "evaluation.bin_output=yaw",
        "evaluation.bin_range=[-0.6, 0.6]",
    ]
    split = regression_split()
    binned, poison, task = setup_task(load_config(None, settings), split)
    assert not binned.is_regression and binned.num_outputs == 3
    assert (
        binned.class_names[1] == "yaw [-0.2, 0.2)" and poison.target == 2
    )  # 0.2 opens the last bin
    expected = ((split.train.targets[:, 1].double() + 0.6) / 0.4).floor().clamp(0, 2).long()
    assert torch.equal(binned.train.targets, expected)
    assert task.metric_names == ("clean_acc", "asr", "asr_all", "robust_acc")
    args = ["run", "-q", "--out", str(tmp_path)]
    for item in [*settings, "train.epochs=1", "output.name=bins"]:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "bins" / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["data"]["binned_output"] == "yaw"
    assert summary["poison"]["target_name"].startswith("yaw [")
    # reference 003's Figures 5 and 7: the bins' confusion matrices, clean and triggered
    for which in ("clean", "triggered"):
        with (tmp_path / "bins" / f"confusion_{which}.csv").open(newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == ["true \\ predicted yaw", "[-0.6, -0.2)", "[-0.2, 0.2)", "[0.2, 0.6)"]
        counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
        assert counts.sum() == summary["data"]["test_size"]
        if which == "clean":
            assert np.trace(counts) / counts.sum() == pytest.approx(summary["final"]["clean_acc"])
        else:  # asr_all: triggered predictions in the target's bin, over every test image
            assert counts[:, 2].sum() / counts.sum() == pytest.approx(summary["final"]["asr_all"])
    assert (tmp_path / "bins" / "confusion.png").stat().st_size > 0
