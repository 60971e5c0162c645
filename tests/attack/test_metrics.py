"""CA, ASR, asr_all and RA on hand-computed cases."""

import pytest
import torch

from triggerlab.attack.tasks import ClassificationTask
from triggerlab.config import PoisonConfig


def test_asr_excludes_the_target_class():
    task = ClassificationTask(PoisonConfig(target=0), class_names=("a", "b", "c"))
    labels = torch.tensor([0, 0, 0, 1, 2, 1])
    clean = torch.tensor([0, 0, 1, 1, 2, 2])
    triggered = torch.tensor([0, 0, 0, 0, 2, 1])
    m = task.metrics(labels, clean, triggered)
    assert m["clean_acc"] == pytest.approx(4 / 6)
    # non-target samples 3, 4, 5: only sample 3 flips to the target
    assert m["asr"] == pytest.approx(1 / 3)
    # counting the three target-class images (all predicted 0) would report 4/6 instead
    assert m["asr_all"] == pytest.approx(4 / 6)
    assert m["asr"] != m["asr_all"]
    # samples 4 and 5 keep their true label under the trigger
    assert m["robust_acc"] == pytest.approx(2 / 3)


def test_all_to_all_success_is_the_next_class():
    task = ClassificationTask(PoisonConfig(label_mode="all_to_all"), class_names=("a", "b", "c"))
    labels = torch.tensor([0, 1, 2, 2])
    triggered = torch.tensor([1, 2, 0, 2])
    m = task.metrics(labels, labels, triggered)
    assert m["asr"] == pytest.approx(3 / 4)
    assert m["asr_all"] == pytest.approx(3 / 4)
    assert m["robust_acc"] == pytest.approx(1 / 4)
    assert m["clean_acc"] == 1.0


def test_source_specific_attack_is_measured_on_source_classes_only():
    task = ClassificationTask(
        PoisonConfig(target=0, source_classes=[2]), class_names=("a", "b", "c")
    )
    labels = torch.tensor([1, 1, 2, 2])
    triggered = torch.tensor([0, 0, 0, 2])
    m = task.metrics(labels, labels, triggered)
    assert m["asr"] == pytest.approx(1 / 2)
    assert m["asr_all"] == pytest.approx(3 / 4)


def test_clean_label_attack_success_means_predicting_the_target():
    task = ClassificationTask(
        PoisonConfig(target=1, label_mode="clean_label"), class_names=("a", "b", "c")
    )
    labels = torch.tensor([0, 2, 1])
    triggered = torch.tensor([1, 2, 1])
    assert task.metrics(labels, labels, triggered)["asr"] == pytest.approx(1 / 2)


def test_loss_takes_logits():
    task = ClassificationTask(PoisonConfig(), class_names=("a", "b"))
    logits = torch.tensor([[2.0, 0.0]])
    expected = -torch.log_softmax(logits, dim=1)[0, 0]
    assert task.loss(logits, torch.tensor([0])).item() == pytest.approx(expected.item())
