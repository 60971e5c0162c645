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
