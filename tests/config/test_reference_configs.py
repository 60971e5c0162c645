"""The reference configs say whether they follow a paper's text or its authors' code, and the
code-faithful ones set what the code does (docs/references.md)."""

import pytest
from support import REPO

from triggerlab.config import load_config
from triggerlab.grid.spec import load_grid_spec

REFERENCE_CONFIGS = sorted((REPO / "configs").glob("ref00*.yaml"))


@pytest.mark.parametrize("path", REFERENCE_CONFIGS, ids=lambda p: p.name)
def test_every_reference_config_says_what_it_follows(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Follows: the "), first
    assert any(source in first for source in ("paper's text", "thesis's text", "authors' code")), (
        first
    )
    if path.stem.endswith("_code"):
        assert first.startswith("# Follows: the authors' code")


@pytest.mark.parametrize("name", ["ref001_digits_code", "ref001_offline_code"])
def test_reference_001_code_configs_stamp_natively_and_count_every_class(name):
    spec = load_grid_spec(REPO / "configs" / f"{name}.yaml")
    base = spec.base
    assert base["trigger"]["stage"] == "native"
    assert base["data"]["options"] == {"stored_size": 28}  # MNIST's stored side
    assert base["poison"]["sources"] == "all" and base["poison"]["rounding"] == "down"
    assert base["model"]["normalization"] == "half"
    assert spec.lead_metric == "asr_all"
    assert spec.grid["trigger.size"] == [0.04, 0.06, 0.08]
    assert "green001" not in spec.grid["trigger.color"]  # the code's MNIST green is black


def test_reference_002_code_config_is_the_code_point_by_point():
    cfg = load_config(REPO / "configs" / "ref002_code_base.yaml")
    assert cfg.model.name == "small_cnn" and cfg.model.options == {"output_softmax": True}
    assert cfg.model.normalization == "half"
    assert cfg.poison.sources == "all" and cfg.poison.rounding == "down"
    assert (cfg.poison.target, cfg.trigger.size, cfg.trigger.position) == (1, 5, "bottom_right")
    train = cfg.train
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay) == ("sgd", 0.01, 0, 0)
    assert (train.lr_schedule, train.epochs, train.batch_size) == ("constant", 100, 64)
    rates = load_grid_spec(REPO / "configs" / "ref002_code_poisoning_rate.yaml")
    assert rates.grid["poison.rate"] == [0.01, 0.02, 0.025, 0.0275, 0.03, 0.05]
    assert rates.lead_metric == "asr_all"
    corrected = load_config(REPO / "configs" / "ref002_base.yaml")
    assert corrected.model.options == {} and corrected.poison.sources == "non_target"


@pytest.mark.parametrize(
    ("name", "stored", "normalization", "colors"),
    [
        ("ref001_mnist_code", "mnist", "half", ["white", "black"]),
        ("ref001_cifar10_code", "cifar10", "cifar10_ref001", ["white", "black", "green001"]),
    ],
)
def test_reference_001_code_configs_on_the_references_data(name, stored, normalization, colors):
    """Items 1-6 together: native stamping with int sizes, every class, asr_all first, the
    authors' normalisation, their trainable sets with the network in training mode."""
    spec = load_grid_spec(REPO / "configs" / f"{name}.yaml")
    base = spec.base
    assert base["data"]["name"] == stored and base["trigger"]["stage"] == "native"
    assert base["poison"]["sources"] == "all" and base["poison"]["rounding"] == "down"
    model = base["model"]
    assert (model["freeze"], model["frozen_mode"]) == ("ref001_code", "train")
    assert model["normalization"] == normalization
    assert spec.lead_metric == "asr_all" and spec.grid["trigger.color"] == colors
    assert (base["train"]["optimizer"], base["train"]["epochs"]) == ("adam", 20)
    if stored == "mnist":  # a fresh first convolution, except AlexNet's
        (group,) = spec.zip
        first = dict(zip(group["model.name"], group["model.first_conv"], strict=True))
        assert first == {
            "alexnet": "pretrained",
            "googlenet": "fresh",
            "vgg19_bn": "fresh",
            "resnet152": "fresh",
        }


@pytest.mark.slow
def test_a_cell_of_the_mnist_code_config_runs_end_to_end(tmp_path):
    """One cell on a tiny MNIST file set, GoogLeNet starting from a checkpoint instead of its
    ImageNet weights (offline): stamped at 28 px, a fresh first convolution, the code's
    trainable set in training mode."""
    import torch
    from support.formats import write_mnist

    from triggerlab.grid.plan import plan_grid
    from triggerlab.models import build_model
    from triggerlab.run.experiment import run_experiment

    write_mnist(tmp_path / "mnist")
    torch.manual_seed(0)
    weights = tmp_path / "googlenet.pt"
    torch.save(build_model("googlenet", 3, (64, 64), 10).state_dict(), weights)
    spec = load_grid_spec(
        REPO / "configs" / "ref001_mnist_code.yaml",
        [
            f"base.data.root={tmp_path / 'mnist'}",
            "base.data.download=false",
            f"base.model.pretrained={weights}",
            "base.train.epochs=1",
            "base.train.batch_size=8",
            f"base.output.directory={tmp_path / 'runs'}",
        ],
    )
    cell = next(
        r
        for r in plan_grid(spec)
        if r.config.model.name == "googlenet" and r.config.poison.rate == 0.02
    )
    summary = run_experiment(cell.config).summary
    assert summary["trigger_stamping"]["stage"] == "native"
    assert summary["trigger_stamping"]["stamped_shape"] == [1, 28, 28]
    assert summary["feature_cache"]["used"] is False
    assert summary["model"]["freeze"] == "ref001_code"
