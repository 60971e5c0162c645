"""Config loading, overrides with type coercion, and error messages."""

from pathlib import Path

import pytest
import yaml
from support import REPO

from triggerlab.config import ExperimentConfig, apply_overrides, load_config
from triggerlab.errors import ConfigError


def test_configs_default_yaml_is_the_embedded_default():
    assert load_config(REPO / "configs" / "default.yaml") == load_config()


@pytest.mark.parametrize("name", ["default", "badnets_mnist", "badnets_cifar10"])
def test_shipped_configs_validate(name):
    assert isinstance(load_config(REPO / "configs" / f"{name}.yaml"), ExperimentConfig)


def test_reference_002_baseline_settings():
    cfg = load_config(REPO / "configs" / "badnets_mnist.yaml")
    assert (cfg.poison.rate, cfg.poison.target, cfg.trigger.size, cfg.trigger.position) == (
        0.1,
        1,
        5,
        "bottom_right",
    )
    assert cfg.trigger.color == "white" and cfg.model.name == "small_cnn"


def test_overrides_coerce_types_and_create_sections():
    cfg = load_config(
        None,
        [
            "poison.rate=0.05",
            "trigger.position=[3, 4]",
            "train.epochs=7",
            "data.name=mnist",
            "data.root=/data/mnist",
            "output.save_model=true",
            "trigger.color=red",
        ],
    )
    assert cfg.poison.rate == 0.05
    assert cfg.trigger.position == (3, 4)
    assert cfg.train.epochs == 7
    assert cfg.data.root == Path("/data/mnist")
    assert cfg.output.save_model is True
    raw = apply_overrides({}, ["model.options.width=8"])
    assert raw == {"model": {"options": {"width": 8}}}


def test_split_assignments_keeps_bracketed_values_whole():
    from triggerlab.config import split_assignments

    text = "kind=random colors=[red, 'dark blue'] positions=[top_left, [1, 2]]  opacity=0.5"
    assert split_assignments(text) == [
        "kind=random",
        "colors=[red, 'dark blue']",
        "positions=[top_left, [1, 2]]",
        "opacity=0.5",
    ]


def test_changing_kind_starts_the_trigger_afresh():
    cfg = load_config(None, ["trigger.kind=frame", "trigger.thickness=2"])
    assert cfg.trigger.kind == "frame" and cfg.trigger.thickness == 2
    kept = load_config(None, ["trigger.kind=patch", "trigger.color=red"])
    assert kept.trigger.size == 3  # same kind: the default experiment's keys stay


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["poison.rate"])
    with pytest.raises(ConfigError, match="poison.rate is a value, not a section"):
        load_config(None, ["poison.rate=0.1", "poison.rate.x=1"])


def test_unknown_keys_are_errors_that_list_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epoch=3"])
    assert "train.epoch: unknown key; expected one of optimizer, loss, lr" in str(info.value)
    with pytest.raises(ConfigError, match="trigger.colour: unknown key"):
        load_config(None, ["trigger.colour=red"])
    with pytest.raises(ConfigError, match="extra: unknown key"):
        load_config(None, ["extra=1"])


def test_rate_out_of_range_and_rate_with_count():
    with pytest.raises(
        ConfigError, match=r"poison.rate: Input should be less than or equal to 1 \(got 1.5\)"
    ):
        load_config(None, ["poison.rate=1.5"])
    with pytest.raises(ConfigError, match="either poison.rate or poison.count"):
        load_config(None, ["poison.rate=0.1", "poison.count=10"])
    assert load_config(None, ["poison.rate=null", "poison.count=10"]).poison.count == 10
    assert load_config(None, ["poison.count=10"]).poison.rate is None  # rate is 0.1 only alone


def test_trigger_kind_defaults_to_patch(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"trigger": {"size": 0.25, "color": "blue"}}))
    cfg = load_config(path)
    assert cfg.trigger.kind == "patch" and cfg.trigger.size == 0.25


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_saved_yaml_round_trips():
    cfg = load_config(
        None, ["trigger.position=[1, 2]", "trigger.color=[1, 2, 3]", "data.resize=[16, 20]"]
    )
    again = ExperimentConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert next(iter(yaml.safe_load(cfg.to_yaml())["trigger"])) == "kind"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trigger.kind=warp", "trigger.stage=native"], "trigger.stage: native stamps the stored"),
        (
            ["trigger.kind=reflection", "trigger.pool=dataset", "trigger.stage=native"],
            "trigger.pool: dataset draws reflections",
        ),
    ],
)
def test_combinations_the_stages_cannot_honour_are_refused(overrides, message):
    """Per-batch poisoning and Refool's dataset pool see the model's inputs, not the stored
    images a native stage stamps."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    load_config(None, [*overrides, "trigger.stage=model_input"])
