"""The frozen-feature cache refuses runs whose frozen body does not compute fixed features:
frozen batch norms in training mode (reference 001's code) and random crops of the images."""

import pytest

from triggerlab.config import load_config
from triggerlab.run.inputs import why_not_cached
from triggerlab.run.prepare import prepare

FROZEN = [
    "model.name=resnet18_cifar",
    "model.options={width: 4}",
    "model.freeze=classifier",
    "train.device=cpu",
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))


def reason(*settings):
    return why_not_cached(prepare(load_config(None, [*FROZEN, *settings])))


def test_the_cache_applies_while_frozen_batch_norms_keep_their_statistics():
    assert reason() is None


def test_frozen_batch_norms_in_training_mode_refuse_the_cache_and_say_why():
    why = reason("model.frozen_mode=train")
    assert why is not None
    assert why.startswith("model.frozen_mode: train runs the frozen body's")
    assert "(BatchNorm2d)" in why and "depend on the batch" in why


def test_random_crops_refuse_the_cache():
    why = reason("model.crops={size: 24, resize: 28}")
    assert why is not None and why.startswith("model.crops gives training a new random crop")


@pytest.mark.slow
def test_a_run_with_crops_and_frozen_norms_in_training_mode_says_why_it_is_not_cached(tmp_path):
    from triggerlab.run.experiment import run_experiment

    settings = [
        *FROZEN,
        "model.frozen_mode=train",
        "model.crops={size: 24, resize: 28}",
        "train.epochs=1",
        f"output.directory={tmp_path}",
        "output.name=r",
    ]
    result = run_experiment(load_config(None, settings))
    assert result.summary["feature_cache"]["used"] is False
    assert result.summary["feature_cache"]["reason"].startswith("model.crops gives training")
    assert 0.0 <= result.summary["final"]["clean_acc"] <= 1.0
