"""Trigger presets: each paper's settings with its label mode, and the listing that names them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from triggerlab.catalogue.papers import TRIGGER_PAPERS
from triggerlab.catalogue.triggers import TRIGGER_KINDS
from triggerlab.cli import app
from triggerlab.config import load_config
from triggerlab.errors import ConfigError


def test_every_kind_names_its_paper_and_label_mode():
    assert set(TRIGGER_PAPERS) == set(TRIGGER_KINDS)
    modes = {"all_to_one", "all_to_all", "clean_label", "any"}
    assert all(paper.label_mode in modes for paper in TRIGGER_PAPERS.values())
    assert TRIGGER_PAPERS["signal"].label_mode == "clean_label"
    assert TRIGGER_PAPERS["reflection"].label_mode == "clean_label"


def test_every_preset_validates_and_its_poisoning_is_a_config():
    for kind, paper in TRIGGER_PAPERS.items():
        for name in paper.presets:
            cfg = load_config(None, [f"trigger.kind={kind}", f"trigger.preset={name}"])
            for key, value in paper.presets[name].poison.items():
                assert getattr(cfg.poison, key) == value


def test_sig_preset_is_clean_label_with_backdoorbench_s_signal():
    cfg = load_config(None, ["trigger.kind=signal", "trigger.preset=backdoorbench"])
    assert cfg.poison.label_mode == "clean_label"
    assert (cfg.trigger.delta, cfg.trigger.frequency, cfg.trigger.first_column) == (40 / 255, 6, 0)
    # without the preset SIG is clean-label too: its paper's label mode is the default
    plain = load_config(None, ["trigger.kind=signal"])
    assert plain.poison.label_mode == "paper" and plain.poison_label_mode == "clean_label"


def test_what_the_config_sets_wins_over_the_preset():
    cfg = load_config(
        None,
        [
            "trigger.kind=signal",
            "trigger.preset=backdoorbench",
            "trigger.delta=0.1",
            "poison.label_mode=all_to_one",
        ],
    )
    assert (cfg.trigger.delta, cfg.trigger.frequency, cfg.poison.label_mode) == (
        0.1,
        6,
        "all_to_one",
    )


def test_an_unknown_preset_is_named_with_those_there_are():
    with pytest.raises(ConfigError, match="backdoorbench"):
        load_config(None, ["trigger.kind=signal", "trigger.preset=paper"])
    with pytest.raises(ConfigError, match="no presets"):
        load_config(None, ["trigger.kind=frame", "trigger.preset=authors"])


def test_triggers_list_says_which_label_mode_the_paper_used():
    result = CliRunner().invoke(app, ["triggers", "list"])
    assert result.exit_code == 0
    assert (
        "Barni, Kallas & Tondi 2019 (SIG); label mode there: clean_label, triggerlab's default "
        "for this kind (poison.label_mode: paper; all_to_one on regression)"
    ) in result.output
    assert "label mode there: any; triggerlab's default for this kind: all_to_one" in (
        result.output
    )
    assert "preset backdoorbench: shape=sine, delta=0.1569" in result.output
    assert "poison.label_mode=clean_label" in result.output
