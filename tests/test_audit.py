"""`triggerlab audit` end to end on a model the test defines, backdoors and saves two ways."""

import json

import pytest
import torch
from auditmodels import make_cnn
from safetensors.torch import load_file
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import load_config
from triggerlab.experiment import run_experiment

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A BadNets digits model (target 0) saved as safetensors and as a .pt state dict."""
    folder = tmp_path_factory.mktemp("audit")
    cfg = load_config(
        None, ["output.save_model=true", f"output.directory={folder}", "output.name=run"]
    )
    run = run_experiment(cfg)
    assert run.summary["final"]["asr"] > 0.9
    state = load_file(str(folder / "run" / "model.safetensors"))
    torch.save(state, folder / "model.pt")
    return folder


def audit(*args: str):
    return runner.invoke(app, ["audit", *args], env={"COLUMNS": "200"})


@pytest.mark.parametrize("name", ["run/model.safetensors", "model.pt"])
def test_audit_finds_the_target_class(weights, tmp_path, name):
    out = tmp_path / "report"
    result = audit(
        "--model",
        "auditmodels:make_cnn",
        "--weights",
        str(weights / name),
        "--data",
        "digits",
        "--set",
        "data.resize=16",
        "--samples",
        "200",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "audit.json").read_text())
    assert report["flagged"] == [0] and report["flagged_names"] == ["0"]
    target = report["classes"][0]
    assert target["anomaly_index"] > 2 and target["reversed_trigger_success"] > 0.9
    assert (out / "reversed_triggers.png").read_bytes()[:4] == b"\x89PNG"
    assert "flagged classes: 0" in result.output


def test_audit_python_api_with_normalisation(weights):
    from triggerlab.audit import Normalize, audit_model, load_weights, read_state_dict

    model = make_cnn()
    load_weights(model, read_state_dict(weights / "model.pt"))
    wrapped = torch.nn.Sequential(Normalize([0.0], [1.0]), model)  # identity normalisation
    result = audit_model(wrapped, load_config(None, []), samples=150)
    assert result.flagged == [0]


def mismatched(folder):
    from triggerlab.models import build_model

    path = folder / "lenet.pt"
    torch.save(build_model("lenet5", 1, (16, 16), 10).state_dict(), path)
    return path


def whole_module(folder):
    path = folder / "module.pt"
    torch.save(make_cnn(), path)  # pickles the module object, not a state dict
    return path


@pytest.mark.parametrize(
    ("model", "weights_file", "extra", "message"),
    [
        (
            "nosuch.module:make",
            "model.pt",
            [],
            "--model: cannot import 'nosuch.module' (ModuleNotFoundError",
        ),
        ("auditmodels:missing", "model.pt", [], "--model: 'auditmodels' has no callable 'missing'"),
        ("auditmodels:not_a_model", "model.pt", [], "returned a int, not a torch.nn.Module"),
        ("auditmodels", "model.pt", [], "expected package.module:factory"),
        (
            "auditmodels:make_cnn",
            mismatched,
            [],
            "unexpected keys: classifier.5.bias, classifier.5.weight",
        ),
        (
            "auditmodels:make_cnn",
            whole_module,
            [],
            "is not a plain state dict that loads with weights_only=True",
        ),
        (
            "auditmodels:make_cnn",
            "model.pt",
            ["--model-kwargs", '{"classes": 3}'],
            "shapes do not match",
        ),
        ("auditmodels:make_cnn", "model.pt", ["--model-kwargs", '{"depth": 3}'], "--model-kwargs"),
        (
            "auditmodels:make_cnn",
            "model.pt",
            ["--input-normalization", "0.5/0.5/0.5,0.2/0.2/0.2"],
            "MEAN has 3 values; the data has 1 channel(s)",
        ),
        ("auditmodels:make_cnn", "missing.pt", [], "does not exist"),
    ],
)
def test_bad_audit_inputs_exit_2(weights, tmp_path, model, weights_file, extra, message):
    path = weights_file(tmp_path) if callable(weights_file) else weights / weights_file
    result = audit(
        "--model",
        model,
        "--weights",
        str(path),
        "--data",
        "digits",
        "--set",
        "data.resize=16",
        "--out",
        str(tmp_path / "report"),
        *extra,
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "report").exists()
