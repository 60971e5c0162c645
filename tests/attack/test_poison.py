"""Poisoned-sample selection, label transforms and the append/replace modes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triggerlab.attack.poison import poison_count, poison_dataset
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.catalogue.triggers import PatchSpec
from triggerlab.config import PoisonConfig
from triggerlab.data.dataset import ImageDataset
from triggerlab.errors import ConfigError
from triggerlab.run.prepare import validate_poison


def dataset(n_per_class: int = 10, classes: int = 4) -> ImageDataset:
    targets = torch.arange(classes).repeat_interleave(n_per_class)
    images = torch.zeros(len(targets), 1, 6, 6, dtype=torch.uint8)
    return ImageDataset(images, targets, tuple(str(c) for c in range(classes)))


TRIGGER = PatchSpec(size=2, color="white").build((1, 6, 6))


def run(cfg: PoisonConfig, data: ImageDataset | None = None, seed: int = 0):
    data = data or dataset()
    task = ClassificationTask(cfg, data.class_names)
    return poison_dataset(data, task, TRIGGER, torch.Generator().manual_seed(seed))


def test_all_to_one_replace_draws_non_target_and_relabels():
    result = run(PoisonConfig(rate=0.25, target=2))
    assert result.count == 10  # round(0.25 * 40)
    assert len(result.train) == 40
    assert (result.original_labels != 2).all()
    assert (result.new_labels == 2).all()
    assert (result.train.targets[result.indices] == 2).all()
    assert (result.train.images[result.indices][:, :, 4:, 4:] == 255).all()
    untouched = torch.ones(40, dtype=torch.bool)
    untouched[result.indices] = False
    assert (result.train.images[untouched] == 0).all()
    assert result.fraction == pytest.approx(0.25)


def test_rounding_and_count():
    assert poison_count(PoisonConfig(rate=0.005), 1437) == 7
    assert poison_count(PoisonConfig(rate=0.1), 1437) == 144
    assert poison_count(PoisonConfig(rate=None, count=33), 1437) == 33


def test_all_to_all_maps_to_next_class():
    result = run(PoisonConfig(rate=0.5, label_mode="all_to_all"))
    assert torch.equal(result.new_labels, (result.original_labels + 1) % 4)
    assert set(result.original_labels.tolist()) <= {0, 1, 2, 3}


def test_clean_label_draws_target_class_and_keeps_labels():
    result = run(PoisonConfig(count=5, rate=None, target=3, label_mode="clean_label"))
    assert (result.original_labels == 3).all()
    assert torch.equal(result.new_labels, result.original_labels)
    with pytest.raises(ConfigError, match="target class 3, and there are 10"):
        run(PoisonConfig(count=11, rate=None, target=3, label_mode="clean_label"))


def test_sources_all_draws_from_the_target_class_too():
    """BackdoorBench's convention: every training image may be poisoned, the target's own
    images included (they keep their label and gain the trigger)."""
    everything = run(PoisonConfig(rate=1.0, target=2, sources="all"))
    assert everything.count == 40
    assert sorted(set(everything.original_labels.tolist())) == [0, 1, 2, 3]
    assert (everything.new_labels == 2).all()
    assert (everything.train.images[:, :, 4:, 4:] == 255).all()
    with pytest.raises(ConfigError, match="only 30 are eligible"):
        run(PoisonConfig(rate=1.0, target=2))  # the default draws from the other classes only
    drawn = run(PoisonConfig(rate=0.5, target=2, sources="all"), seed=3)
    assert (drawn.original_labels == 2).any()


def test_source_classes_restrict_the_draw():
    result = run(PoisonConfig(rate=0.25, target=0, source_classes=[1, 3]))
    assert set(result.original_labels.tolist()) <= {1, 3}


def test_append_mode_adds_triggered_copies():
    data = dataset()
    result = run(PoisonConfig(rate=0.25, mode="append"), data)
    assert len(result.train) == 50
    assert torch.equal(result.indices, torch.arange(40, 50))
    assert torch.equal(result.train.images[:40], data.images)
    assert torch.equal(
        result.train.targets[result.source_indices], data.targets[result.source_indices]
    )
    assert (result.train.targets[40:] == 0).all()
    assert result.fraction == pytest.approx(10 / 50)


def test_same_seed_same_indices_different_seed_different():
    a, b, c = (run(PoisonConfig(rate=0.25), seed=s) for s in (1, 1, 2))
    assert torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, c.indices)


def test_target_and_sources_validated_against_classes():
    with pytest.raises(ConfigError, match="poison.target: class 10 does not exist; expected 0-9"):
        validate_poison(PoisonConfig(target=10), 10)
    with pytest.raises(ConfigError, match="poison.source_classes"):
        validate_poison(PoisonConfig(source_classes=[1, 12]), 10)


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0.0, 0.75), target=st.integers(0, 3), seed=st.integers(0, 1000))
def test_count_is_round_rate_times_n_and_never_target(rate, target, seed):
    result = run(PoisonConfig(rate=rate, target=target), seed=seed)
    assert result.count == round(rate * 40)
    assert len(set(result.indices.tolist())) == result.count
    assert (result.original_labels != target).all()
