"""``poison.schedule``: each trigger kind's paper default, and run ids that change only where
the default changed what a run computes (WaNet and BppAttack)."""

import pytest

from triggerlab.config import load_config
from triggerlab.errors import ConfigError
from triggerlab.grid.plan import run_id, training_key


def config(*settings: str):
    return load_config(None, list(settings))


@pytest.mark.parametrize(
    ("kind", "schedule"),
    [("patch", "static"), ("blend", "static"), ("warp", "per_batch"), ("quantize", "per_batch")],
)
def test_paper_resolves_to_the_kinds_schedule(kind, schedule):
    cfg = config(f"trigger.kind={kind}")
    assert cfg.poison.schedule == "paper" and cfg.poison_schedule == schedule
    assert config(f"trigger.kind={kind}", "poison.schedule=static").poison_schedule == "static"


# Ids given before per-batch poisoning existed (computed on the code before it).
OLD_IDS = {
    (): "6fe7e1bc1dd7",
    ("trigger.kind=blend",): "8d03364fb6e8",
    # dirty-label SIG (now clean-label by default: tests/grid/test_label_mode_ids.py)
    ("trigger.kind=signal", "poison.rate=0.05", "poison.label_mode=all_to_one"): "3b0e6ac75fd4",
    ("trigger.kind=warp",): "81eb0e6b02fe",  # static, noise mode off
    ("trigger.kind=warp", "trigger.noise_mode=true"): "9ba0ca87dc7e",  # static
    ("trigger.kind=quantize",): "96357de3baa4",  # static
}


def test_static_kinds_keep_their_ids():
    sig = ("trigger.kind=signal", "poison.rate=0.05", "poison.label_mode=all_to_one")
    for settings in [(), ("trigger.kind=blend",), sig]:
        assert run_id(config(*settings)) == OLD_IDS[settings]
        assert run_id(config(*settings, "poison.schedule=static")) == OLD_IDS[settings]
    assert training_key(config()) == "b83a0019c2fe"


def test_the_old_static_wanet_and_bpp_keep_their_ids_and_the_new_defaults_get_new_ones():
    static = ("poison.schedule=static",)
    warp, quantize = ("trigger.kind=warp",), ("trigger.kind=quantize",)
    assert run_id(config(*warp, *static, "trigger.noise_mode=false")) == OLD_IDS[warp]
    noisy = ("trigger.kind=warp", "trigger.noise_mode=true")
    assert run_id(config(*warp, *static)) == OLD_IDS[noisy]  # noise mode is on by default now
    assert run_id(config(*quantize, *static)) == OLD_IDS[quantize]
    assert run_id(config(*warp)) not in OLD_IDS.values()
    assert run_id(config(*quantize)) not in OLD_IDS.values()
    # paper and its resolution are the same experiment, with the same id
    assert run_id(config(*warp)) == run_id(config(*warp, "poison.schedule=per_batch"))
    assert run_id(config()) != run_id(config("poison.schedule=per_batch"))


def test_per_batch_poisoning_cannot_append():
    with pytest.raises(ConfigError, match="poison.mode: append .* poison.schedule: static"):
        config("trigger.kind=warp", "poison.mode=append")
    assert config("trigger.kind=warp", "poison.mode=append", "poison.schedule=static")


def test_a_per_batch_rate_below_one_sample_a_batch_is_refused():
    with pytest.raises(ConfigError, match=r"poison.rate: 0.01 of a batch of 32 .* truncates to 0"):
        config("trigger.kind=warp", "poison.rate=0.01")
    assert config("trigger.kind=warp", "poison.rate=0.01", "poison.schedule=static")
    assert config("trigger.kind=warp", "poison.rate=0.01", "train.batch_size=128")
    assert config("trigger.kind=warp", "poison.rate=0")  # the clean baseline
