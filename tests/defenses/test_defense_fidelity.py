"""Defences as their authors run them: fine-pruning prunes what the classifier reads, NAD
distils at a ResNet's stages, retraining augments as the run did, presets reproduce the
authors' settings, a defence never sees the test set or the poisoned samples, and the
defence table rates each repair by its DER."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from triggerlab.analysis.defense_tables import defense_cell, defense_rating, der
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.catalogue.defenses import (
    DEFENSE_KINDS,
    AblSpec,
    DefenseSpec,
    FinePruningSpec,
    FinetuneSpec,
    NadSpec,
    NeuralCleanseSpec,
)
from triggerlab.config import PoisonConfig, TrainConfig, load_config
from triggerlab.data.dataset import ImageDataset
from triggerlab.defenses.base import DefenseInputs, OracleInputs, retraining
from triggerlab.defenses.fine_pruning import progressive_count, pruned_features
from triggerlab.defenses.leakage import DefenseLeak, check_no_leak, defense_inputs
from triggerlab.defenses.nad import DEFAULT_BETAS, attention_stages
from triggerlab.defenses.neural_cleanse import CleanseScan
from triggerlab.defenses.trigger_reversal import ReversedTrigger
from triggerlab.models import factory_of
from triggerlab.models.pretrained import load_matching

CPU = torch.device("cpu")
RESNETS = ["preact_resnet18", "resnet18_cifar", "resnet18"]


def resnet(name: str, size: int = 16) -> nn.Module:
    """A small copy of each ResNet: the CIFAR ones at width 4, torchvision's as it is."""
    options = {"width": 4} if name != "resnet18" else {}
    torch.manual_seed(0)
    return factory_of(name)(3, (size, size), 10, **options)


def images(count: int, size: int = 16, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, size, size), generator=generator).byte()


def inputs_for(
    model: nn.Module,
    clean: ImageDataset,
    *,
    classes: int = 10,
    train: TrainConfig | None = None,
    fresh_model=None,
) -> DefenseInputs:
    task = ClassificationTask(PoisonConfig(target=0), [str(c) for c in range(classes)])
    return DefenseInputs(
        model=model,
        task=task,
        device=CPU,
        train=train or TrainConfig(batch_size=32),
        training=clean,
        clean=clean,
        generator=torch.Generator().manual_seed(0),
        seed=0,
        fresh_model=fresh_model,
    )


def labelled(x: torch.Tensor, classes: int = 10) -> ImageDataset:
    targets = torch.arange(x.shape[0]) % classes
    return ImageDataset(x, targets, tuple(str(c) for c in range(classes)))


def classifier_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the final linear layer reads on ``x`` (float [0, 1] images)."""
    seen: list[torch.Tensor] = []
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    handle = fc.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    model.eval()
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


# ---- 1. fine-pruning prunes the channels the classifier reads -------------------------------


@pytest.mark.parametrize("name", RESNETS)
def test_pruning_every_channel_zeroes_the_classifiers_input(name):
    model = resnet(name)
    x = images(4)
    pruned = pruned_features(model, x[:1], CPU)
    fc = model.fc
    assert pruned.layer is fc and pruned.channels == fc.in_features and pruned.at_input
    before = classifier_input(model, x.float() / 255)
    assert before.abs().sum() > 0
    handle = pruned.mask(list(range(pruned.channels)))
    assert classifier_input(model, x.float() / 255).abs().sum() == 0
    handle.remove()


@pytest.mark.parametrize("name", RESNETS)
def test_fine_pruning_all_channels_leaves_the_classifier_reading_nothing(name):
    """The defence itself, at a ratio that rounds to every channel: afterwards the output is
    the classifier's bias whatever the input. (Before, the last convolution was masked, and
    the last block's shortcut still carried the features.)"""
    model = resnet(name)
    clean = labelled(images(20))
    spec = FinePruningSpec(prune_ratio=0.9999, epochs=1, lr=1e-3)
    outcome = spec.run(inputs_for(model, clean))
    assert outcome.report["channels"] == model.fc.in_features
    assert len(outcome.report["pruned_channels"]) == model.fc.in_features
    assert outcome.report["pruned_layer"] == "fc"
    model.eval()
    with torch.no_grad():
        out = model(images(3, seed=1).float() / 255)
    assert torch.allclose(out, model.fc.bias.expand_as(out), atol=1e-6)
    assert not model.fc._forward_pre_hooks  # folded into the weights: no hook left behind


def test_a_small_cnn_prunes_its_last_feature_maps_channels_with_their_positions():
    model = factory_of("small_cnn")(1, (16, 16), 10)
    x = images(6, channels=1)
    pruned = pruned_features(model, x[:1], CPU)
    first_linear = model.classifier[1]
    assert pruned.layer is first_linear and pruned.channels == 32
    assert pruned.per_channel * pruned.channels == first_linear.in_features
    handle = pruned.mask([0, 5])
    seen: list[torch.Tensor] = []
    probe = first_linear.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    model.eval()
    with torch.no_grad():
        features = model.features(x.float() / 255)
        model(x.float() / 255)
    handle.remove()
    probe.remove()
    grouped = seen[0].view(6, 32, -1)
    assert grouped[:, [0, 5]].abs().sum() == 0
    assert torch.equal(grouped[:, 1], features[:, 1].flatten(1))


def test_progressive_pruning_keeps_the_last_count_within_acc_ratio(monkeypatch):
    """BackdoorBench's rule (defense/fp.py:372-380): keep pruning while the accuracy moved by
    less than acc_ratio of the unpruned one; the first count beyond it is not kept."""
    import triggerlab.defenses.fine_pruning as fp

    scripted = iter([0.90, 0.90, 0.85, 0.80, 0.10])  # counts 0, 1, 2, 3 (beyond 10 %), 4

    def quality(*_args: object) -> float:
        return next(scripted)

    monkeypatch.setattr(fp, "clean_quality", quality)
    model = nn.Sequential(nn.Conv2d(1, 10, 1), nn.Flatten(), nn.Linear(10 * 4, 2))
    clean = labelled(images(4, size=2, channels=1), classes=2)
    pruned = pruned_features(model, clean.images[:1], CPU)
    inputs = inputs_for(model, clean, classes=2)
    count, curve = progressive_count(pruned, list(range(10)), inputs, 0.1, 0.1)
    assert count == 2
    assert curve == [[0, 0.90], [1, 0.90], [2, 0.85], [3, 0.80]]


def test_progressive_fine_pruning_reports_its_curve_and_prunes_what_it_kept():
    model = resnet("preact_resnet18")
    clean = labelled(images(30))
    spec = FinePruningSpec(acc_ratio=0.5, step_ratio=0.25, epochs=1, lr=1e-3)
    outcome = spec.run(inputs_for(model, clean))
    curve = outcome.report["prune_curve"]
    first = curve[0][1]
    within = [c for c, q in curve[1:] if abs(q - first) < 0.5 * first]
    assert [c for c, _ in curve[1:]] == [8, 16, 24][: len(curve) - 1]  # steps of ceil(0.25 * 32)
    kept = 0
    for count, _ in curve[1:]:
        if count not in within:
            break
        kept = count
    assert len(outcome.report["pruned_channels"]) == kept


def test_the_backdoorbench_preset_is_its_config():
    spec = FinePruningSpec(preset="backdoorbench")
    # SCLBD/BackdoorBench config/defense/fp/config.yaml
    assert (spec.acc_ratio, spec.step_ratio, spec.clean_fraction) == (0.1, 0.01, 0.05)
    assert (spec.epochs, spec.lr, spec.optimizer, spec.weight_decay) == (100, 0.01, "sgd", 5e-4)
    assert (spec.batch_size, spec.lr_schedule, spec.augment) == (256, "cosine", None)


# ---- 2. NAD distils at the stages -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("preact_resnet18", ["layer2", "layer3", "layer4"]),
        ("resnet18_cifar", ["layer2", "layer3", "layer4"]),
        ("resnet18", ["layer2", "layer3", "layer4"]),
        ("small_cnn", ["features.0", "features.3"]),
        ("lenet5", ["features.0", "features.3"]),
    ],
)
def test_nad_attention_layers_per_architecture(name, expected):
    model = resnet(name) if name in RESNETS else factory_of(name)(1, (16, 16), 10)
    names = {module: n for n, module in model.named_modules()}
    assert [names[m] for m in attention_stages(model, 3)] == expected


def test_nad_passes_a_stem_and_head_convolution_to_reach_the_stages():
    """timm's EfficientNet: ``conv_stem``, ``blocks`` (seven stages), ``conv_head``."""
    model = factory_of("efficientnet_lite0")(3, (32, 32), 10)
    names = {module: n for n, module in model.named_modules()}
    assert [names[m] for m in attention_stages(model, 3)] == ["blocks.4", "blocks.5", "blocks.6"]


@pytest.mark.parametrize("name", ["preact_resnet18", "resnet18_cifar"])
def test_the_cifar_resnets_stages_halve_the_resolution(name):
    model = resnet(name, size=32)
    sizes = []
    hooks = [
        getattr(model, f"layer{i}").register_forward_hook(
            lambda _m, _i, out: sizes.append(tuple(out.shape[1:]))
        )
        for i in range(1, 5)
    ]
    model(torch.rand(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert sizes == [(4, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4)]


@pytest.mark.parametrize("name", ["preact_resnet18", "resnet18_cifar"])
def test_a_state_dict_saved_before_the_stages_still_loads(name):
    """Before stages, the eight blocks were ``layers.0`` to ``layers.7``."""
    model = resnet(name)
    flat = {}
    for key, value in model.state_dict().items():
        if key.startswith("layer"):
            stage, index, rest = key[len("layer") :].split(".", 2)
            key = f"layers.{(int(stage) - 1) * 2 + int(index)}.{rest}"
        flat[key] = value
    assert any(k.startswith("layers.7.") for k in flat)
    x = torch.rand(2, 3, 16, 16)
    model.eval()
    for load in (lambda m: m.load_state_dict(flat), lambda m: load_matching(m, flat)):
        other = factory_of(name)(3, (16, 16), 10, width=4)
        load(other)
        other.eval()
        assert torch.equal(other(x), model(x))


def authors_lr(epoch: int, lr: float) -> float:
    """bboylyg/NAD utils/util.py:68-79, restated."""
    if epoch < 2:
        return lr
    return 0.01 if epoch < 20 else 0.0001


def test_the_nad_authors_preset_is_their_schedule():
    spec = NadSpec(preset="authors")
    assert (spec.epochs, spec.teacher_epochs, spec.batch_size, spec.clean_fraction) == (
        20,
        10,
        64,
        0.05,
    )
    assert spec.augment == ["random_crop", "hflip"]
    assert spec.betas is None and DEFAULT_BETAS == (500.0, 1000.0, 1000.0)  # the authors' default
    inputs = inputs_for(nn.Linear(2, 2), labelled(images(2)))
    recipe = retraining(spec, inputs)
    assert [recipe.lr_at(e) for e in range(20)] == [authors_lr(e, 0.1) for e in range(20)]
    optimizer = recipe.make_optimizer(nn.Linear(2, 2), inputs.train)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)
    assert recipe.augment is not None and list(recipe.augment.operations) == spec.augment


def test_a_preset_fills_only_what_the_config_leaves_out():
    cfg = load_config(None, ["defense.kind=nad", "defense.preset=authors", "defense.epochs=3"])
    assert (cfg.defense.epochs, cfg.defense.lr, cfg.defense.preset) == (3, 0.1, "authors")
    with pytest.raises(ValueError, match="preset"):
        NadSpec(preset="paper")
    with pytest.raises(ValueError, match="preset"):
        FinetuneSpec(preset="authors")  # a kind without presets has no such setting


# ---- 3. retraining defences augment as the run did ------------------------------------------


class Recorder(nn.Module):
    """A tiny CNN that keeps every batch it is trained on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def lopsided(count: int = 16) -> ImageDataset:
    """Images bright on the left only, each a little different: a mirror shows."""
    x = torch.zeros(count, 1, 6, 6, dtype=torch.uint8)
    x[:, :, :, :3] = (100 + torch.arange(count) * 9).view(-1, 1, 1, 1).byte()
    return labelled(x, classes=2)


def mirrored_share(seen: list[torch.Tensor], data: ImageDataset) -> float:
    """Share of the seen images that are a mirrored image of ``data`` and not an image of it."""
    originals = data.images.float() / 255
    flipped = originals.flip(3)
    batch = torch.cat(seen)
    as_is = (batch[:, None] == originals[None]).flatten(2).all(2).any(1)
    mirrored = (batch[:, None] == flipped[None]).flatten(2).all(2).any(1)
    assert bool((as_is | mirrored).all())  # nothing else was trained on
    return float((mirrored & ~as_is).double().mean())


FLIP = TrainConfig(batch_size=4, augment=["hflip"])


@pytest.mark.parametrize(
    "spec",
    [
        FinetuneSpec(epochs=2),
        FinePruningSpec(epochs=2, prune_ratio=0.25),
        NadSpec(epochs=2, teacher_epochs=1),
    ],
    ids=["finetune", "fine_pruning", "nad"],
)
def test_retraining_defences_augment_with_the_runs_augmentation(spec):
    data, model = lopsided(), Recorder()
    spec.run(inputs_for(model, data, classes=2, train=FLIP))
    assert 0.2 < mirrored_share(model.seen, data) < 0.8
    model, plain = Recorder(), TrainConfig(batch_size=4)
    spec.run(inputs_for(model, data, classes=2, train=plain))
    assert mirrored_share(model.seen, data) == 0.0


def test_neural_cleanses_unlearning_augments(monkeypatch):
    import triggerlab.defenses.neural_cleanse as nc

    def one_flagged(model, images, labels, num_classes, **_kwargs):
        blank = ReversedTrigger(0, torch.zeros(1, 6, 6), torch.zeros(1, 6, 6), 0.0, 1.0)
        return CleanseScan([blank, blank], [1.0, 9.0], [3.0, 0.0], [0], "logits", 0.0)

    monkeypatch.setattr(nc, "scan_and_flag", one_flagged)
    monkeypatch.setattr(CleanseScan, "figure", lambda _self, _names: b"")
    data, model = lopsided(), Recorder()
    outcome = NeuralCleanseSpec(epochs=2).run(inputs_for(model, data, classes=2, train=FLIP))
    assert outcome.repaired
    assert 0.2 < mirrored_share(model.seen, data) < 0.8


def test_abl_augments_its_fine_tuning_only_as_the_authors_do():
    data = lopsided(20)
    made: list[Recorder] = []

    def fresh() -> Recorder:
        made.append(Recorder())
        return made[-1]

    inputs = inputs_for(Recorder(), data, classes=2, train=FLIP, fresh_model=fresh)
    spec = AblSpec(
        isolation_epochs=1, finetune_epochs=1, unlearn_epochs=1, isolation_ratio=0.2, lr=0.01
    )
    spec.run(inputs)
    seen = made[0].seen
    sizes = [batch.shape[0] for batch in seen]
    isolation = len(range(0, 20, 4))
    unlearning = 1  # four isolated samples: one batch
    assert sum(sizes[:isolation]) == 20 and sum(sizes[-unlearning:]) == 4
    assert mirrored_share(seen[:isolation], data) == 0.0
    assert mirrored_share(seen[-unlearning:], data) == 0.0
    assert mirrored_share(seen[isolation:-unlearning], data) > 0.2


def test_a_defences_augmentation_is_checked_like_the_runs():
    from triggerlab.data.dataset import DataSplit
    from triggerlab.errors import ConfigError
    from triggerlab.run.prepare import check_augmentation

    gaze = ImageDataset(images(2, size=8), torch.zeros(2, 2))  # continuous labels
    data = DataSplit(train=gaze, test=gaze)
    overrides = ["defense.kind=finetune", "defense.augment=[hflip]"]
    with pytest.raises(ConfigError, match="defense.augment: hflip"):
        check_augmentation(load_config(None, overrides), data)
    crop = ["defense.kind=finetune", "defense.augment=[random_crop]", "train.crop_padding=8"]
    with pytest.raises(ConfigError, match="train.crop_padding: 8"):
        check_augmentation(load_config(None, crop), data)
    check_augmentation(load_config(None, ["defense.kind=finetune"]), data)


# ---- 10. the leakage guard ------------------------------------------------------------------


def test_defense_inputs_have_no_place_for_the_test_set_or_the_poisoned_samples():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(DefenseInputs)}
    assert fields == {
        "model",
        "task",
        "device",
        "train",
        "training",
        "clean",
        "generator",
        "seed",
        "fresh_model",
    }
    oracle_only = {f.name for f in dataclasses.fields(OracleInputs)} - fields
    assert oracle_only == {"test", "triggered_test", "poisoned"}


def leak_case():
    train = labelled(images(10))
    train = ImageDataset(
        train.images, train.targets, train.class_names, pool_index=torch.arange(10)
    )
    test = labelled(images(6, seed=3))
    triggered = test.images.clone()
    poisoned = torch.zeros(10, dtype=torch.bool)
    poisoned[[2, 7]] = True
    return train, test, triggered, poisoned


def build(spec: DefenseSpec, train, clean, test, triggered, poisoned) -> DefenseInputs:
    return defense_inputs(
        spec,
        model=nn.Linear(2, 2),
        task=ClassificationTask(PoisonConfig(target=0), [str(c) for c in range(10)]),
        device=CPU,
        train=TrainConfig(),
        training=train,
        clean=clean,
        seed=1,
        fresh_model=None,
        test=test,
        triggered_test=triggered,
        poisoned=poisoned,
    )


def test_a_defence_is_handed_neither_the_test_set_nor_where_samples_came_from():
    train, test, triggered, poisoned = leak_case()
    inputs = build(FinetuneSpec(), train, labelled(images(4, seed=5)), test, triggered, poisoned)
    assert type(inputs) is DefenseInputs
    assert inputs.training.pool_index is None  # append mode repeats a poisoned source's
    assert torch.equal(inputs.training.images, train.images)
    with pytest.raises(DefenseLeak, match="clean.images is the test images"):
        build(FinetuneSpec(), train, test, test, triggered, poisoned)
    sliced = ImageDataset(triggered[:3], test.targets[:3], test.class_names)
    with pytest.raises(DefenseLeak, match="triggered test images"):
        build(FinetuneSpec(), train, sliced, test, triggered, poisoned)
    pool = labelled(images(16, seed=7))  # one loaded array, split by slicing: not a leak
    first, rest = pool.images[:6], pool.images[6:]
    split_test = ImageDataset(first, pool.targets[:6], pool.class_names)
    split_clean = ImageDataset(rest, pool.targets[6:], pool.class_names)
    build(FinetuneSpec(), train, split_clean, split_test, first, poisoned)
    smuggled = OracleInputs(**{**inputs.__dict__, "test": test})
    with pytest.raises(DefenseLeak, match="OracleInputs"):
        check_no_leak(smuggled, {})


def test_only_an_oracle_named_so_is_handed_the_test_set():
    from typing import Literal

    class PeekSpec(DefenseSpec):
        kind: Literal["oracle_peek"] = "oracle_peek"
        oracle = True

    train, test, triggered, poisoned = leak_case()
    inputs = build(PeekSpec(), train, None, test, triggered, poisoned)
    assert isinstance(inputs, OracleInputs)
    assert inputs.test is test and torch.equal(inputs.poisoned, poisoned)
    with pytest.raises(TypeError, match="oracle_"):

        class HiddenSpec(DefenseSpec):
            kind: Literal["peek"] = "peek"
            oracle = True

    assert not any(spec.oracle for spec in DEFENSE_KINDS.values())


@pytest.mark.slow
def test_a_run_hands_its_defence_checked_inputs(tmp_path, monkeypatch):
    """The experiment goes through the guard: in append mode the training set it poisoned
    carries pool indices (a poisoned copy repeats its source's); the defence's does not."""
    import triggerlab.defenses.leakage as leakage  # the run imports it when it defends
    from triggerlab.defenses.base import DefenseOutcome
    from triggerlab.run.experiment import run_experiment

    given: list[ImageDataset] = []
    handed: list[DefenseInputs] = []
    guard = leakage.defense_inputs

    def watched(spec, **kwargs):
        given.append(kwargs["training"])
        return guard(spec, **kwargs)

    def record(self, inputs):
        handed.append(inputs)
        return DefenseOutcome({"clean_samples": 0})

    monkeypatch.setattr(leakage, "defense_inputs", watched)
    monkeypatch.setattr(FinetuneSpec, "run", record)
    overrides = ["defense.kind=finetune", "poison.mode=append", "train.epochs=1"]
    run_experiment(load_config(None, [*overrides, f"output.directory={tmp_path}"]))
    (training,), (inputs,) = given, handed
    assert training.pool_index is not None
    assert training.pool_index.unique().numel() < len(training)  # the appended copies
    assert type(inputs) is DefenseInputs and inputs.training.pool_index is None
    assert torch.equal(inputs.training.images, training.images)


# ---- 11. DER ---------------------------------------------------------------------------------


def test_der_by_hand():
    # ASR 0.95 -> 0.15 (drop 0.80), CA 0.90 -> 0.86 (drop 0.04): (0.80 - 0.04 + 1) / 2 = 0.88
    assert der(0.95, 0.15, 0.90, 0.86) == pytest.approx(0.88)
    # nothing changed: 0.5; the ASR rose and the accuracy improved: both clip at 0
    assert der(0.5, 0.5, 0.9, 0.9) == 0.5
    assert der(0.2, 0.6, 0.8, 0.9) == 0.5
    # removed for free, and a defence that destroys the model without touching the backdoor
    assert der(1.0, 0.0, 0.9, 0.9) == 1.0
    assert der(1.0, 1.0, 0.9, 0.1) == pytest.approx(0.1)
    assert defense_rating({"asr": 0.95, "clean_acc": 0.9}, {"asr": 0.15, "clean_acc": 0.86}) == (
        pytest.approx(0.88)
    )
    assert defense_rating({"auroc": 0.9}, {}) is None
    assert defense_rating({"asr": math.nan, "clean_acc": 0.9}, {"asr": 0.1, "clean_acc": 0.9}) is (
        None
    )


def test_the_defence_table_gives_each_repair_its_der_with_an_interval():
    runs = pd.DataFrame(
        {
            "asr_after": [0.15, 0.25, 0.05],
            "clean_acc_after": [0.86, 0.88, 0.84],
            "der": [
                der(0.95, 0.15, 0.90, 0.86),
                der(0.95, 0.25, 0.90, 0.88),
                der(0.95, 0.05, 0.90, 0.84),
            ],
        }
    )
    cell = defense_cell(runs, ("asr", "clean_acc"))
    from triggerlab.analysis.statistics import interval

    stats = interval(runs["der"], "der")
    assert stats["mean"] == pytest.approx((0.88 + 0.84 + 0.92) / 3)
    assert f"DER {stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]" in cell
    assert cell.endswith("(n=3)")
