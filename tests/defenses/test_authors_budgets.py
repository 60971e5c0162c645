"""The authors' defence budgets as presets (Neural Cleanse, STRIP, ABL, SCALE-UP), and the
computations those presets switch to, each against a re-statement of the authors' code."""

from __future__ import annotations

import pytest
import torch

from triggerlab.catalogue.defenses import AblSpec, NeuralCleanseSpec, ScaleUpSpec, StripSpec
from triggerlab.config import load_config
from triggerlab.defenses.abl import flooding_loss, lga_loss
from triggerlab.defenses.scale_up import ClassStatistics, ScaleUpDetector
from triggerlab.errors import ConfigError


def test_neural_cleanse_authors_budget_is_1000_steps_of_31_batches():
    spec = NeuralCleanseSpec(preset="authors")
    # bolunwang/backdoor gtsrb_visualize_example.py:50-67: STEPS 1000, NB_SAMPLE 1000 // 32
    assert (spec.steps, spec.batches_per_step) == (1000, 1000 // 32)
    assert (spec.init_cost, spec.attack_success, spec.anomaly_threshold) == (1e-3, 0.99, 2.0)
    assert spec.max_norm_ratio == 1.0  # mad_outlier_detection.py:35-59 has no such condition
    assert (NeuralCleanseSpec().steps, NeuralCleanseSpec().batches_per_step) == (200, 10)


def test_strip_authors_budget_is_100_overlays_at_1_percent():
    spec = StripSpec(preset="authors")
    assert (spec.overlays, spec.false_rejection) == (100, 0.01)
    assert StripSpec().overlays == 20


def test_abl_authors_epochs_and_isolation_loss():
    spec = AblSpec(preset="authors")
    # bboylyg/ABL config.py:20-34; backdoor_unlearning.py:197-205 trains from epoch 1 of 5
    assert (spec.isolation_epochs, spec.finetune_epochs, spec.unlearn_epochs) == (10, 60, 4)
    assert (spec.isolation_loss, spec.gamma, spec.isolation_ratio) == ("flooding", 0.5, 0.01)
    assert spec.unlearn_lr == 5e-4
    assert AblSpec().isolation_loss == "lga"


def test_scale_up_backdoorbox_preset():
    spec = ScaleUpSpec(preset="backdoorbox")
    assert (spec.standardise, spec.threshold, spec.scales) == ("overall", 0.5, [3, 5, 7, 9, 11])
    assert (ScaleUpSpec().standardise, ScaleUpSpec().threshold) == ("per_class", None)


@pytest.mark.parametrize(
    ("kind", "preset", "key", "value"),
    [
        ("neural_cleanse", "authors", "steps", 7),
        ("strip", "authors", "overlays", 9),
        ("abl", "authors", "finetune_epochs", 2),
        ("scale_up", "backdoorbox", "threshold", 1.5),
    ],
)
def test_these_presets_fill_only_what_the_config_leaves_out(kind, preset, key, value):
    cfg = load_config(
        None, [f"defense.kind={kind}", f"defense.preset={preset}", f"defense.{key}={value}"]
    )
    assert getattr(cfg.defense, key) == value
    with pytest.raises(ConfigError, match="defense.preset"):
        load_config(None, [f"defense.kind={kind}", "defense.preset=nobody"])


def _authors_flooding(loss: torch.Tensor, flooding: float) -> torch.Tensor:
    # bboylyg/ABL backdoor_isolation.py:109-114: (loss - opt.flooding).abs() + opt.flooding
    return (loss - flooding).abs() + flooding


@pytest.mark.parametrize("value", [0.1, 0.49, 0.51, 2.3])
def test_flooding_is_the_authors_and_steps_like_lga(value):
    a = torch.tensor(value, requires_grad=True)
    b = torch.tensor(value, requires_grad=True)
    ours = flooding_loss(a, 0.5)
    assert ours.item() == pytest.approx(_authors_flooding(torch.tensor(value), 0.5).item())
    ours.backward()
    lga_loss(b, 0.5).backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.item() == b.grad.item() == (1.0 if value > 0.5 else -1.0)


def _backdoorbox_scores(clean_spc: torch.Tensor, test_spc: torch.Tensor) -> torch.Tensor:
    # THUYimingLi/BackdoorBox core/defenses/SCALE_UP.py:74-75 and 110-111: one mean and one
    # (unbiased) standard deviation over the validation SPC, whatever the class
    mean, std = torch.mean(clean_spc).item(), torch.std(clean_spc).item()
    return (test_spc - mean) / std


def test_overall_standardisation_is_backdoorbox_s():
    clean = torch.tensor([0.2, 0.4, 0.0, 0.6, 0.2, 0.8, 0.4, 0.2], dtype=torch.float64)
    predicted = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    test = torch.tensor([1.0, 0.2, 0.6, 0.0], dtype=torch.float64)
    test_predicted = torch.tensor([0, 1, 2, 3])
    overall = ClassStatistics.of(clean, predicted, per_class=False)
    expected = _backdoorbox_scores(clean, test)
    torch.testing.assert_close(overall.standardise(test, test_predicted), expected)
    per_class = ClassStatistics.of(clean, predicted).standardise(test, test_predicted)
    assert not torch.allclose(per_class, expected)  # the paper's form differs on these inputs


def test_a_fixed_threshold_flags_scores_at_least_it():
    stats = ClassStatistics({}, {}, 0.0, 1.0)
    detector = ScaleUpDetector(None, [3.0], stats, 0.5, torch.device("cpu"), at_least=True)  # type: ignore[arg-type]
    flags = detector.flag(torch.tensor([0.4, 0.5, 0.6]))
    assert flags.tolist() == [False, True, True]
