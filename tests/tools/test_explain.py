"""Grad-CAM panels and feature maps for a classification and a regression run."""

import pytest
import torch
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import load_config
from triggerlab.models import build_model
from triggerlab.run.experiment import run_experiment
from triggerlab.tools.explain import grad_cam

runner = CliRunner()
PNG = b"\x89PNG"


def saved_run(folder, name, *settings):
    cfg = load_config(
        None,
        ["output.save_model=true", f"output.directory={folder}", f"output.name={name}", *settings],
    )
    return run_experiment(cfg).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, backdoored_run):
    folder = tmp_path_factory.mktemp("explain")
    return {
        "backdoored": backdoored_run,
        "clean": saved_run(folder, "clean", "train.epochs=3", "poison.rate=0"),
        "gaze": saved_run(
            folder,
            "gaze",
            "data.name=synthetic_gaze",
            "data.resize=16",
            "data.options={count: 80, subjects: 4}",
            "poison.target=[0.0, 0.3]",
            "train.epochs=1",
        ),
        "unsaved": run_experiment(
            load_config(None, ["train.epochs=1", f"output.directory={folder}"])
        ).run_dir,
    }


def test_grad_cam_maps_are_normalised_per_image():
    model = build_model("lenet5", 1, (28, 28), 10)
    x = torch.rand(3, 1, 28, 28)
    heat = grad_cam(model, x, torch.tensor([1, 2, 3]))
    assert heat.shape == (3, 28, 28) and heat.min() >= 0
    peaks = heat.flatten(1).amax(dim=1)
    # each map is scaled to a peak of 1, unless the ReLU left it all zero (nothing positive)
    assert all(abs(p - 1) < 1e-6 or p == 0 for p in peaks.tolist()) and peaks.max() == 1
    assert not x.requires_grad


@pytest.mark.slow
def test_classification_panels_with_a_clean_model(runs, tmp_path):
    result = runner.invoke(
        app,
        [
            "explain",
            str(runs["backdoored"]),
            "--clean-run",
            str(runs["clean"]),
            "--out",
            str(tmp_path),
            "--samples",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "gradcam.png").read_bytes()[:4] == PNG
    assert (tmp_path / "feature_maps.png").read_bytes()[:4] == PNG


@pytest.mark.slow
def test_regression_panels_for_a_chosen_output(runs, tmp_path):
    result = runner.invoke(
        app, ["explain", str(runs["gaze"]), "--output", "yaw", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "gradcam.png").read_bytes()[:4] == PNG


@pytest.mark.slow
@pytest.mark.parametrize(
    ("run", "extra", "message"),
    [
        ("unsaved", [], "no model.safetensors; run it with output.save_model set to true"),
        ("backdoored", ["--output", "yaw"], "--output: only regression runs have named outputs"),
        ("gaze", ["--output", "roll"], "--output: 'roll' is not an output"),
        ("gaze", ["--clean-run", "BACKDOORED"], "--clean-run"),
    ],
)
def test_bad_explain_inputs(runs, tmp_path, run, extra, message):
    extra = [str(runs["backdoored"]) if e == "BACKDOORED" else e for e in extra]
    result = runner.invoke(app, ["explain", str(runs[run]), "--out", str(tmp_path / "x"), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
