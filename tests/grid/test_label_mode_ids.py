"""``poison.label_mode: paper``: each trigger kind's paper's label mode by default, and run ids
that change only where the default changed what a run computes (SIG and Refool)."""

import pytest

from triggerlab.catalogue.papers import TRIGGER_PAPERS
from triggerlab.config import load_config
from triggerlab.errors import ConfigError
from triggerlab.grid.plan import run_id

COMPOSE = ("trigger.kind=compose", "trigger.triggers=[{kind: signal}, {kind: reflection}]")
GAZE = ("data.name=synthetic_gaze", "poison.target=[0.0, 0.0]")


def config(*settings: str):
    return load_config(None, list(settings))


@pytest.mark.parametrize("kind", sorted(TRIGGER_PAPERS))
def test_paper_resolves_to_the_kinds_label_mode(kind):
    settings = [f"trigger.kind={kind}"]
    if kind == "compose":
        settings = list(COMPOSE)
    cfg = config(*settings)
    expected = "clean_label" if kind in ("signal", "reflection") else "all_to_one"
    assert cfg.poison.label_mode == "paper" and cfg.poison_label_mode == expected
    assert cfg.poisoning.label_mode == expected and cfg.poison.label_mode == "paper"
    assert config(*settings, "poison.label_mode=all_to_one").poison_label_mode == "all_to_one"


def test_regression_and_combinators_resolve_to_all_to_one():
    # regression supports all_to_one only; a composition is no paper's attack
    assert config("trigger.kind=signal", *GAZE).poison_label_mode == "all_to_one"
    assert config("trigger.kind=reflection", *GAZE).poison.rate == 0.1
    assert config(*COMPOSE).poison_label_mode == "all_to_one"
    assert config(*COMPOSE).poison.rate == 0.1


def test_a_clean_label_run_defaults_to_half_the_target_class_of_ten():
    assert config("trigger.kind=signal").poison.rate == 0.05
    assert config("trigger.kind=blend", "poison.label_mode=clean_label").poison.rate == 0.05
    assert config("trigger.kind=signal", "poison.label_mode=all_to_one").poison.rate == 0.1
    assert config("trigger.kind=signal", "poison.rate=0.02").poison.rate == 0.02
    counted = config("trigger.kind=signal", "poison.count=30")
    assert counted.poison.rate is None and counted.poison.count == 30


def test_sources_all_needs_the_dirty_label_form_of_sig():
    with pytest.raises(ConfigError, match="label_mode: paper is clean_label for trigger.kind"):
        config("trigger.kind=signal", "poison.sources=all")
    with pytest.raises(ConfigError, match="sources: all draws from every class"):
        config("trigger.kind=patch", "poison.sources=all", "poison.label_mode=clean_label")
    assert config("trigger.kind=signal", "poison.sources=all", "poison.label_mode=all_to_one")
    assert config("trigger.kind=patch", "poison.sources=all").poison_label_mode == "all_to_one"


# Ids given before the label mode defaulted to the paper's (computed on the code before it).
OLD_IDS = {
    (): "6fe7e1bc1dd7",
    ("trigger.kind=blend",): "8d03364fb6e8",
    COMPOSE: "149cd92fe4a2",
    ("trigger.kind=signal", *GAZE): "becdd608a209",
    ("trigger.kind=signal",): "2555c7c630f6",  # dirty-label, rate 0.1
    ("trigger.kind=reflection",): "487688e6053b",
    ("trigger.kind=signal", "poison.rate=0.05"): "3b0e6ac75fd4",
    # clean-label by name, at the rate the default now takes
    ("trigger.kind=signal", "poison.label_mode=clean_label", "poison.rate=0.05"): "d8e6798d30fc",
    ("trigger.kind=reflection", "poison.label_mode=clean_label", "poison.rate=0.05"): (
        "dacaad23f560"
    ),
}


def test_other_kinds_keep_their_ids():
    for settings in [(), ("trigger.kind=blend",), COMPOSE, ("trigger.kind=signal", *GAZE)]:
        assert run_id(config(*settings)) == OLD_IDS[settings]


def test_sig_and_refool_named_all_to_one_keep_their_ids():
    pinned = ("poison.label_mode=all_to_one", "poison.rate=0.1")  # the old defaults, by name
    for kind in ("signal", "reflection"):
        assert run_id(config(f"trigger.kind={kind}", *pinned)) == OLD_IDS[(f"trigger.kind={kind}",)]
    rate = ("trigger.kind=signal", "poison.rate=0.05")
    assert run_id(config(*rate, "poison.label_mode=all_to_one")) == OLD_IDS[rate]


def test_sig_and_refool_by_default_get_the_ids_of_their_clean_label_runs():
    for kind in ("signal", "reflection"):
        new = run_id(config(f"trigger.kind={kind}"))
        assert new != OLD_IDS[(f"trigger.kind={kind}",)]
        named = (f"trigger.kind={kind}", "poison.label_mode=clean_label", "poison.rate=0.05")
        assert new == OLD_IDS[named]  # the paper's label mode is that run, by name
    assert (
        run_id(config("trigger.kind=signal", "poison.rate=0.05"))
        != OLD_IDS[("trigger.kind=signal", "poison.rate=0.05")]
    )
