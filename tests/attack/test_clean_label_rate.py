"""A clean-label rate stays a share of the whole training set (as BackdoorBench's): one that
asks for more images than the target class has is refused with the numbers and the ways out."""

import re

import pytest
import torch

from triggerlab.attack.poison import check_poison_count
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.config import PoisonConfig, load_config
from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError


def dataset(per_class: int = 10, classes: int = 5) -> ImageDataset:
    targets = torch.arange(classes).repeat_interleave(per_class)
    images = torch.zeros(len(targets), 1, 4, 4, dtype=torch.uint8)
    return ImageDataset(images, targets, tuple(str(c) for c in range(classes)))


def count(cfg: PoisonConfig, data: ImageDataset | None = None) -> int:
    data = data or dataset()
    return check_poison_count(ClassificationTask(cfg, data.class_names), data)


def test_a_rate_beyond_the_target_class_names_the_numbers_and_both_ways_out():
    # 0.3 of 50 is 15 images, the target class has 10: at most 10 / 50 = 0.2
    expected = (
        "poison.rate: 0.3 of the training set of 50 samples is 15 poisoned samples, but "
        "label_mode clean_label (the default for the signal and reflection kinds: their "
        "papers') poisons only images of the target class 2, and there are 10; lower "
        "poison.rate to at most 0.2 (or set poison.count <= 10), or set poison.label_mode: "
        "all_to_one for the dirty-label form"
    )
    with pytest.raises(ConfigError, match=re.escape(expected)):
        count(PoisonConfig(rate=0.3, target=2, label_mode="clean_label"))
    assert count(PoisonConfig(rate=0.2, target=2, label_mode="clean_label")) == 10
    assert count(PoisonConfig(rate=0.3, target=2, label_mode="all_to_one")) == 15


def test_the_suggested_rate_fits_when_the_share_is_not_round():
    data = dataset(per_class=7, classes=3)  # 7 of 21: a third
    with pytest.raises(ConfigError, match="at most 0.3333 ") as caught:
        count(PoisonConfig(rate=0.5, target=0, label_mode="clean_label"), data)
    assert "poison.rate" in str(caught.value)
    for rounding, fits in (("nearest", 7), ("down", 6)):  # the suggestion fits either rounding
        cfg = PoisonConfig(rate=0.3333, target=0, label_mode="clean_label", rounding=rounding)
        assert count(cfg, data) == fits


def test_a_count_beyond_the_target_class():
    with pytest.raises(
        ConfigError,
        match=r"poison.count: 11 poisoned samples, .* there are 10; "
        r"lower poison.count to at most 10, or set poison.label_mode: all_to_one",
    ):
        count(PoisonConfig(rate=None, count=11, target=0, label_mode="clean_label"))


def test_the_paper_default_resolves_before_the_count_is_checked():
    """SIG by default: the run's task is clean-label, at the clean-label default rate."""
    cfg = load_config(None, ["trigger.kind=signal"])
    data = dataset()  # 0.05 of 50: 2 images of the target class 0
    assert count(cfg.poisoning, data) == 2
    with pytest.raises(ConfigError, match="target class 0, and there are 10"):
        count(load_config(None, ["trigger.kind=signal", "poison.rate=0.4"]).poisoning, data)
