"""`triggerlab audit` end to end on a model the test defines, backdoors and saves two ways."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from support import REPO
from support.auditmodels import make_cnn
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import load_config

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory, backdoored_run):
    """The session's BadNets digits model (target 0) as ``run/`` and as a .pt state dict."""
    folder = tmp_path_factory.mktemp("audit")
    shutil.copytree(backdoored_run, folder / "run")
    state = load_file(str(folder / "run" / "model.safetensors"))
    torch.save(state, folder / "model.pt")
    return folder


def audit(*args: str):
    return runner.invoke(app, ["audit", *args], env={"COLUMNS": "200"})


@pytest.mark.slow
def test_audit_finds_the_target_class(weights, tmp_path):
    from triggerlab.tools.user_models import read_state_dict

    safetensors, pt = (read_state_dict(weights / n) for n in ("run/model.safetensors", "model.pt"))
    assert all(torch.equal(safetensors[k], pt[k]) for k in safetensors)  # the same weights
    out = tmp_path / "report"
    result = audit(
        "--model",
        "support.auditmodels:make_cnn",
        "--weights",
        str(weights / "model.pt"),
        "--data",
        "digits",
        "--set",
        "data.resize=16",
        "--samples",
        "200",
        "--batches-per-step",
        "5",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "audit.json").read_text())
    assert report["flagged"] == [0] and report["flagged_names"] == ["0"]
    assert report["output_kind"] == "logits" and report["conclusive"]
    target = report["classes"][0]
    assert target["anomaly_index"] > 2 and target["reversed_trigger_success"] > 0.9
    assert (out / "reversed_triggers.png").read_bytes()[:4] == b"\x89PNG"
    assert "flagged classes: 0;" in result.output
    assert "class 9 (10 of 10): mask L1" in result.output  # one progress line per class in a log


@pytest.mark.slow
def test_audit_python_api_with_normalisation(weights):
    from triggerlab.tools.audit import AuditOptions, Normalize, audit_model
    from triggerlab.tools.user_models import load_weights, read_state_dict

    model = make_cnn()
    load_weights(model, read_state_dict(weights / "model.pt"))
    wrapped = torch.nn.Sequential(Normalize([0.0], [1.0]), model)  # identity normalisation
    result = audit_model(
        wrapped, load_config(None, []), AuditOptions(samples=150, batches_per_step=5)
    )
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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "weights_file", "extra", "message"),
    [
        (
            "nosuch.module:make",
            "model.pt",
            [],
            "--model: cannot import 'nosuch.module' (ModuleNotFoundError",
        ),
        (
            "support.auditmodels:missing",
            "model.pt",
            [],
            "--model: 'support.auditmodels' has no callable 'missing'",
        ),
        (
            "support.auditmodels:not_a_model",
            "model.pt",
            [],
            "returned a int, not a torch.nn.Module",
        ),
        ("support.auditmodels", "model.pt", [], "expected package.module:factory"),
        (
            "support.auditmodels:make_cnn",
            mismatched,
            [],
            "unexpected keys: classifier.5.bias, classifier.5.weight",
        ),
        (
            "support.auditmodels:make_cnn",
            whole_module,
            [],
            "is not a plain state dict that loads with weights_only=True",
        ),
        (
            "support.auditmodels:make_cnn",
            "model.pt",
            ["--model-kwargs", '{"classes": 3}'],
            "shapes do not match",
        ),
        (
            "support.auditmodels:make_cnn",
            "model.pt",
            ["--model-kwargs", '{"depth": 3}'],
            "--model-kwargs",
        ),
        (
            "support.auditmodels:make_cnn",
            "model.pt",
            ["--input-normalization", "0.5/0.5/0.5,0.2/0.2/0.2"],
            "MEAN has 3 values; the data has 1 channel(s)",
        ),
        ("support.auditmodels:make_cnn", "missing.pt", [], "does not exist"),
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


# ---- models nobody here trained ------------------------------------------------------------

# Half the default mini-batches per step keeps each audit to about ten seconds here.
FOREIGN_OPTIONS = ["--samples", "200", "--batches-per-step", "5", "--set", "data.resize=16", "-q"]


def audit_foreign(tmp_path, name: str, weights_file, *extra: str):
    out = tmp_path / name
    result = audit(
        "--weights",
        str(weights_file),
        "--data",
        "digits",
        "--out",
        str(out),
        *FOREIGN_OPTIONS,
        *extra,
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "audit.json").read_text()), result.output


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.1, 0.0], ids=["backdoored", "clean"])
def test_audit_of_a_foreign_model_that_ends_in_a_softmax(tmp_path, rate):
    """A public BadNets implementation's network outputs probabilities: the search must work
    on their logarithm, or most classes' triggers never succeed and the target hides."""
    from support.auditmodels import softmax_cnn, train_foreign

    path = tmp_path / "softmax.pt"
    torch.save(train_foreign(softmax_cnn(), poison_rate=rate).state_dict(), path)
    report, output = audit_foreign(
        tmp_path, "report", path, "--model", "support.auditmodels:softmax_cnn"
    )
    assert report["output_kind"] == "probabilities" and "ends in a softmax" in output
    assert report["conclusive"] and all(c["reached"] for c in report["classes"])
    assert report["flagged"] == ([0] if rate else [])


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.1, 0.0], ids=["backdoored", "clean"])
def test_audit_of_a_foreign_model_trained_on_normalised_inputs(tmp_path, rate):
    from support.auditmodels import bn_net, train_foreign

    path = tmp_path / "bn.pt"
    model = train_foreign(bn_net(), poison_rate=rate, mean=0.5, std=0.25)
    torch.save(model.state_dict(), path)
    report, _ = audit_foreign(
        tmp_path,
        "report",
        path,
        "--model",
        "support.auditmodels:bn_net",
        "--input-normalization",
        "0.5,0.25",
    )
    assert report["output_kind"] == "logits"
    assert report["flagged"] == ([0] if rate else [])


USER_CODE = """
import torch
from torch import nn


def build(classes=10):
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, classes),
    )
"""


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.1, 0.0], ids=["backdoored", "clean"])
def test_audit_of_a_state_dict_saved_by_code_outside_triggerlab(tmp_path, rate, monkeypatch):
    """The user's own module, in a folder of its own (--module-path), trained and saved with
    torch.save(model.state_dict()) by plain PyTorch code."""
    import importlib.util

    from support.auditmodels import train_foreign

    code = tmp_path / "usercode"
    code.mkdir()
    (code / f"nets_{int(rate * 10)}.py").write_text(USER_CODE)
    spec = importlib.util.spec_from_file_location("user_nets", code / f"nets_{int(rate * 10)}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "model.pt"
    torch.save(train_foreign(module.build(), poison_rate=rate).state_dict(), path)
    monkeypatch.chdir(tmp_path)  # not the folder holding the module
    report, _ = audit_foreign(
        tmp_path,
        "report",
        path,
        "--model",
        f"nets_{int(rate * 10)}:build",
        "--module-path",
        str(code),
    )
    assert report["flagged"] == ([0] if rate else [])


@pytest.mark.slow
def test_audit_of_a_run_triggerlab_saved(weights, tmp_path):
    result = audit(
        "--run", str(weights / "run"), "--out", str(tmp_path / "r"), "--batches-per-step", "5", "-q"
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "audit.json").read_text())["flagged"] == [0]


@pytest.mark.slow
def test_a_time_budget_stops_the_search_and_the_report_says_so(weights, tmp_path):
    result = audit(
        "--run", str(weights / "run"), "--out", str(tmp_path / "r"), "--time-budget", "0.5"
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert {c["stopped"] for c in report["classes"]} == {"time budget"}
    assert report["seconds"] < 5
    assert "note: the time budget ended some searches early" in result.output


def test_classes_never_reached_stay_out_of_the_median():
    """The issue's failure: unreached classes' tiny masks set the median, the target's mask
    looked large. Left out, the target stands out; with under three reached, no verdict."""
    from triggerlab.defenses.neural_cleanse import anomaly_indices, flagged_classes

    norms = torch.tensor([4.0, 0.5, 0.4, 0.6, 0.3, 0.5, 0.4, 30.0, 28.0, 33.0])
    reached = torch.tensor([True, False, False, False, False, False, False, True, True, True])
    assert 0 not in flagged_classes(norms)  # a median over all: the target's mask looks large
    assert flagged_classes(norms, reached) == [0]
    index = anomaly_indices(norms, reached)
    assert torch.isnan(index[1]) and index[0] > 2
    few = torch.tensor([True, False, False, False, False, False, False, True, False, False])
    assert flagged_classes(norms, few) == []


@pytest.mark.slow
def test_the_readme_example_trains_and_saves_a_foreign_model(tmp_path):
    import subprocess
    import sys

    from triggerlab.tools.user_models import read_state_dict

    script = REPO / "examples" / "foreign_badnet.py"
    out = tmp_path / "foreign.pt"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(out), "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "epoch 1/1" in done.stdout and f"saved {out}" in done.stdout
    from support.auditmodels import make_net

    make_net().load_state_dict(read_state_dict(out))  # the weights fit the named factory
