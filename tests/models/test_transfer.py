"""Transfer learning: real offline ImageNet weights, torchvision's cache, checkpoints, freeze
policies, and the frozen-feature cache."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import load_config
from triggerlab.errors import ConfigError, DataFormatError
from triggerlab.models import build_configured
from triggerlab.models.timm_models import LITE0_SHA256, lite0_weights_file
from triggerlab.models.transfer import TransferModel
from triggerlab.run.experiment import run_experiment

runner = CliRunner()
LITE = [
    "model.name=efficientnet_lite0",
    "model.pretrained=imagenet",
    "data.resize=32",
    "data.channels=3",
    "train.epochs=2",
]


@pytest.fixture(autouse=True)
def _own_caches(tmp_path, monkeypatch):
    """Every test gets empty feature and torch caches of its own."""
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def model_config(*settings):
    return load_config(None, list(settings)).model


# ---- genuinely pretrained weights, offline -------------------------------------------------------


def test_the_offline_efficientnet_weights_are_the_published_file():
    path = lite0_weights_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LITE0_SHA256


@pytest.mark.slow
def test_pretrained_efficientnet_recognises_a_cat_photo():
    """scikit-image's photo of Chelsea the cat: ImageNet classes 281-285 are the cats."""
    from skimage import data

    from triggerlab.models.timm_models import LITE0_NORMALIZATION, lite0_imagenet_network

    network = TransferModel(lite0_imagenet_network(), *LITE0_NORMALIZATION).eval()
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    image = nn.functional.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top = network(image).softmax(dim=1).topk(3).indices[0].tolist()
    assert set(top) <= {281, 282, 283, 284, 285}, top
    _, info = build_configured(model_config(*LITE[:2]), (3, 32, 32), 10)
    assert info.weights.record()["sha256"] == LITE0_SHA256
    assert info.normalization == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.slow
def test_pretrained_features_beat_random_ones_in_a_linear_probe(tmp_path):
    """The final linear layer trained on frozen features of digits at 64 px (20 epochs, Adam
    at 0.001, seed 1). Measured clean accuracy: ImageNet features 0.967, random ones 0.864
    (seed 0: 0.975 and 0.925). The bar leaves room for another CPU's float rounding."""
    accuracy = {}
    for pretrained in ("imagenet", "null"):
        settings = [
            "model.name=efficientnet_lite0",
            f"model.pretrained={pretrained}",
            "model.freeze=classifier",
            "data.resize=64",
            "data.channels=3",
            "poison.rate=0",
            "train.epochs=20",
            "train.lr=0.001",
            "train.seed=1",
            f"output.directory={tmp_path}",
        ]
        result = run_experiment(load_config(None, settings))
        accuracy[pretrained] = result.summary["final"]["clean_acc"]
    assert accuracy["imagenet"] >= 0.94 and accuracy["imagenet"] > accuracy["null"] + 0.04, accuracy


def test_grey_images_are_repeated_not_a_rebuilt_first_convolution():
    model, _ = build_configured(model_config(*LITE[:2]), (1, 32, 32), 10)
    assert isinstance(model, TransferModel) and model.repeat_channels == 3
    assert model.net.conv_stem.in_channels == 3
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)


# ---- torchvision's cache and checkpoints -------------------------------------------------------


@pytest.mark.slow
def test_torchvision_weights_come_from_the_torch_home_cache(tmp_path):
    from torchvision import models as tvm

    reference = tvm.resnet18(num_classes=1000)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / "resnet18-f37072fd.pth")
    model, info = build_configured(
        model_config("model.name=resnet18", "model.pretrained=imagenet"), (3, 32, 32), 4
    )
    assert torch.equal(model.net.conv1.weight, reference.conv1.weight)
    assert model.net.fc.out_features == 4
    record = info.weights.record()
    assert record["file"] == str(folder / "resnet18-f37072fd.pth")
    assert record["sha256"] == hashlib.sha256((folder / record["file"]).read_bytes()).hexdigest()
    assert record["mean"] == [0.485, 0.456, 0.406]


@pytest.mark.slow
def test_missing_torchvision_weights_offline_name_the_file_and_folder(tmp_path, monkeypatch):
    def offline(url, dst, progress=True):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    result = runner.invoke(
        app,
        [
            "run",
            "--out",
            str(tmp_path / "out"),
            "--set",
            "model.name=alexnet",
            "--set",
            "model.pretrained=imagenet",
            "--set",
            "data.resize=64",
        ],
    )
    assert result.exit_code == 2
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert f"not in {folder / 'alexnet-owt-7be5be79.pth'}" in result.stderr
    assert f"put it in {folder}" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_runs_own_model_is_a_checkpoint(tmp_path):
    first = run_experiment(
        load_config(
            None, [*LITE, "output.save_model=true", f"output.directory={tmp_path}", "output.name=a"]
        )
    )
    saved = first.run_dir / "model.safetensors"
    cfg = model_config("model.name=efficientnet_lite0", f"model.pretrained={saved}")
    model, info = build_configured(cfg, (3, 32, 32), 10)
    state = __import__("safetensors.torch").torch.load_file(str(saved))
    assert torch.equal(model.conv_stem.weight, state["net.conv_stem.weight"])
    assert info.weights.source == "checkpoint"


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_lists_the_keys(tmp_path):
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"missing keys: .*unexpected keys: bias, weight"):
        build_configured(model_config(f"model.pretrained={tmp_path / 'other.pt'}"), (1, 16, 16), 10)


@pytest.mark.slow
def test_imagenet_for_a_model_without_such_weights_is_refused(tmp_path):
    result = runner.invoke(
        app, ["run", "--out", str(tmp_path), "--set", "model.pretrained=imagenet"]
    )
    assert result.exit_code == 2 and "'small_cnn' has no ImageNet weights" in result.stderr


@pytest.mark.slow
def test_timm_models_by_name_fresh_and_pretrained_offline(tmp_path, monkeypatch):
    model, _ = build_configured(model_config("model.name=timm/resnet10t"), (3, 32, 32), 5)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="timm cannot load pretrained weights for resnet10t"):
        build_configured(
            model_config("model.name=timm/resnet10t", "model.pretrained=imagenet"), (3, 32, 32), 5
        )


# ---- freeze policies --------------------------------------------------------------------------


def policy(name, freeze, shape=(3, 64, 64)):
    return build_configured(model_config(f"model.name={name}", f"model.freeze={freeze}"), shape, 10)


def test_classifier_trains_only_the_final_linear_layer():
    model, info = policy("alexnet", "classifier")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["net.classifier.6.weight", "net.classifier.6.bias"]
    record = info.record(model)
    assert record["trainable_parameters"] == 4096 * 10 + 10
    assert record["frozen_parameters"] + record["trainable_parameters"] == record["parameters"]
    model.train()
    dropouts = [m for m in model.net.classifier if isinstance(m, nn.Dropout)]
    assert not any(d.training for d in dropouts)  # they feed frozen layers


def test_head_trains_alexnets_classifier_module_with_its_dropout():
    model, _ = policy("alexnet", "head")
    assert all(p.requires_grad for p in model.net.classifier.parameters())
    assert not any(p.requires_grad for p in model.net.features.parameters())
    model.train()
    assert all(m.training for m in model.net.classifier)
    assert not any(m.training for m in model.net.features)


def test_classifier_and_bn_trains_batch_norms_in_training_mode():
    model, _ = policy("vgg11_bn", "classifier_and_bn", (3, 32, 32))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.weight.requires_grad for m in norms)
    model.train()
    assert all(m.training for m in norms)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert not any(c.weight.requires_grad for c in convs)


def test_unfreeze_last_counts_parameter_tensors_from_the_end():
    model, _ = policy("alexnet", "{unfreeze_last: 4}")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"net.classifier.{i}.{k}" for i in (4, 6) for k in ("weight", "bias")]
    model.train()
    assert model.net.classifier[3].training  # the dropout feeding classifier.4, which trains
    assert not model.net.classifier[0].training
    with pytest.raises(ConfigError, match="unfreeze_last: 17 exceeds the model's 16 parameter"):
        policy("alexnet", "{unfreeze_last: 17}")


def test_head_needs_a_classifier_module():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(ConfigError, match="'head' needs a classifier module"):
        TransferModel(plain).freeze("head")
    no_linear = nn.Sequential(nn.Conv2d(3, 2, 8), nn.Flatten())
    with pytest.raises(ConfigError, match="no linear layer to train"):
        TransferModel(no_linear).freeze("classifier")


def test_the_optimiser_sees_only_trainable_parameters():
    from triggerlab.train.loop import make_optimizer

    model, _ = policy("alexnet", "classifier")
    optimizer = make_optimizer(load_config(None).train, model)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 4096 * 10 + 10


# ---- the frozen-feature cache ------------------------------------------------------------------


def run(tmp_path, name, *extra):
    settings = [
        *LITE,
        "model.freeze=classifier",
        f"output.directory={tmp_path}",
        f"output.name={name}",
        *extra,
    ]
    return run_experiment(load_config(None, settings))


@pytest.mark.slow
def test_the_cache_gives_the_whole_models_numbers_and_is_reused(tmp_path):
    whole = run(tmp_path, "whole", "model.feature_cache=false")
    cached = run(tmp_path, "cached")
    again = run(tmp_path, "again", "train.seed=1")
    for name in ("clean_acc", "asr", "asr_all", "robust_acc"):
        assert cached.summary["final"][name] == pytest.approx(
            whole.summary["final"][name], abs=0.006
        )
    assert cached.summary["final"]["train_loss"] == pytest.approx(
        whole.summary["final"]["train_loss"], rel=0.01
    )
    first, second = cached.summary["feature_cache"], again.summary["feature_cache"]
    assert whole.summary["feature_cache"]["used"] is False
    assert first["used"] and first["built_here"] and not second["built_here"]
    train, test = cached.summary["data"]["train_size"], cached.summary["data"]["test_size"]
    assert whole.summary["feature_cache"]["backbone_forwards"] == 2 * (train + 2 * test)
    poisoned = again.summary["poison"]["count"]
    assert second["backbone_forwards"] == poisoned + test  # the changed images only
    whole_model = 2 * (train + 2 * test)  # 2 epochs of training images and of both test sets
    assert second["backbone_forwards_avoided"] == whole_model - second["backbone_forwards"]
    # a second process reads the same file
    code = (
        "from triggerlab.config import load_config; from triggerlab.run.experiment import "
        "run_experiment; import sys, json; r = run_experiment(load_config(None, sys.argv[1:])); "
        "print(json.dumps(r.summary['feature_cache']))"
    )
    settings = [*LITE, "model.freeze=classifier", f"output.directory={tmp_path}", "train.seed=2"]
    out = subprocess.run(
        [sys.executable, "-c", code, *settings],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1])["built_here"] is False


@pytest.mark.slow
def test_a_corrupt_cache_is_refused_then_rebuilt_once_deleted(tmp_path):
    first = run(tmp_path, "first")
    features = Path(first.summary["feature_cache"]["file"])
    array = np.load(features)
    array[0] += 1  # one changed number
    np.save(features, array)
    with pytest.raises(DataFormatError, match="do not match their checksum \\(damaged\\); delete"):
        run(tmp_path, "second")
    assert not (tmp_path / "second").exists()  # refused before the run folder was made
    features.unlink()
    features.with_suffix(".json").unlink()
    third = run(tmp_path, "third")
    assert third.summary["feature_cache"]["built_here"]
    assert third.summary["final"] == first.summary["final"]


@pytest.mark.slow
def test_freeze_policies_in_a_grid_and_explain_and_audit_on_a_frozen_run(tmp_path):
    from support.gridspecs import write_spec

    from triggerlab.analysis.results import collect
    from triggerlab.grid.runner import run_grid
    from triggerlab.grid.spec import load_grid_spec
    from triggerlab.tools.audit import AuditOptions, audit_run
    from triggerlab.tools.explain import explain_run

    base = {
        "data": {"name": "digits", "resize": 32, "channels": 3},
        "model": {"name": "efficientnet_lite0", "pretrained": "imagenet"},
        "train": {"epochs": 1, "device": "cpu"},
        "output": {"save_model": True},
    }
    spec = write_spec(tmp_path, base=base, grid={"model.freeze": ["classifier", "head"]})
    assert run_grid(load_grid_spec(spec), tmp_path / "g").ok
    table, _ = collect(tmp_path / "g")
    assert list(table["model.freeze"]) == ["classifier", "head"]
    run_dir = next((tmp_path / "g" / "runs").iterdir())
    paths = explain_run(run_dir, tmp_path / "explain", samples=2)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    result = audit_run(run_dir, AuditOptions(samples=60, steps=5, batches_per_step=2))
    assert len(result.triggers) == 10


@pytest.mark.slow
def test_a_defence_repairs_a_frozen_pretrained_model(tmp_path):
    defended = run(tmp_path, "pruned", "defense.kind=fine_pruning", "defense.epochs=1")
    defense = defended.summary["defense"]
    assert defense["channels"] > 0 and len(defense["pruned_channels"]) == defense["channels"] // 2
    assert set(defense["after"]) == {"clean_acc", "asr", "asr_all", "robust_acc"}
    assert defended.summary["model"]["freeze"] == "classifier"
