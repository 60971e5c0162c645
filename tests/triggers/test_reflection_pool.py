"""Refool's reflections drawn from the attacker's own training images of other classes."""

from __future__ import annotations

import json

import pytest
import torch

from triggerlab.catalogue.triggers import ReflectionSpec
from triggerlab.config import load_config
from triggerlab.errors import ConfigError
from triggerlab.run.experiment import run_experiment
from triggerlab.triggers.base import with_training_images


def labelled_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 all white, classes 1 and 2 a grey level of their own per image."""
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    levels = torch.arange(8, dtype=torch.uint8) * 20 + 10
    images = levels.view(8, 1, 1, 1).expand(8, 3, 12, 12).clone()
    images[targets == 0] = 255
    return images, targets


def test_the_dataset_pool_holds_only_other_classes_images():
    images, targets = labelled_images()
    spec = ReflectionSpec(pool="dataset", pool_size=3, mode="focal", sigma=1.0)
    bound = with_training_images(spec.build((3, 12, 12)), images, targets, 0)
    assert bound.pool.shape == (3, 3, 12, 12)
    levels = {round(float(r[0, 0, 0]) ** (1 / 2.2) * 255) for r in bound.pool}
    others = {int(images[i, 0, 0, 0]) for i in range(8) if targets[i] != 0}
    assert levels <= others and len(levels) == 3  # never a white target-class image
    again = with_training_images(spec.build((3, 12, 12)), images, targets, 0)
    assert torch.equal(again.pool, bound.pool)  # the spec's seed fixes the choice
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(bound.apply(x, torch.Generator().manual_seed(1)), x)


def test_a_dataset_pool_needs_the_training_images():
    with pytest.raises(ConfigError, match="trigger.pool: dataset draws from the run's training"):
        ReflectionSpec(pool="dataset").build((3, 12, 12)).apply(torch.zeros(1, 3, 12, 12))
    images, targets = labelled_images()
    with pytest.raises(ConfigError, match="no training image is of another class"):
        only_target = torch.zeros_like(targets)
        with_training_images(
            ReflectionSpec(pool="dataset").build((3, 12, 12)), images, only_target, 0
        )
    with pytest.raises(ValueError, match="pool files needs a path"):
        ReflectionSpec(pool="files")
    assert ReflectionSpec(path="r.png").pool == "files"  # a path alone means files


@pytest.mark.slow
def test_a_run_draws_reflections_from_its_own_training_images(tmp_path):
    cfg = load_config(
        None,
        [
            "train.epochs=1",
            "trigger.kind=reflection",
            "trigger.pool=dataset",
            "trigger.pool_size=8",
        ],
    )
    run_experiment(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["stealth"]["linf_mean"] > 0
