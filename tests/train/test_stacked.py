"""Stacked training: each member of a stack trains exactly as it would alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from triggerlab.attack.tasks import ClassificationTask
from triggerlab.config import PoisonConfig, TrainConfig
from triggerlab.errors import RunFailed
from triggerlab.models.resnet_cifar import CifarResNet18
from triggerlab.models.small import BadNetCNN
from triggerlab.train.augment import Augment
from triggerlab.train.checkpoint import read_checkpoint
from triggerlab.train.loop import StagePlan, fit
from triggerlab.train.stacked import FitCall, _StackedFit, fit_stacked, group_calls, stack_key

TASK = ClassificationTask(PoisonConfig(rate=0.1, target=0), [str(i) for i in range(4)])
CPU = torch.device("cpu")


def member(
    seed: int,
    build: Callable[[], nn.Module],
    *,
    n: int = 40,
    stage: StagePlan | None = None,
    **train: Any,
) -> tuple[FitCall, list[dict[str, Any]]]:
    """A member's training (model, data and order from ``seed``) and the list its epochs go to."""
    torch.manual_seed(seed)
    model = build()
    size = 16 if isinstance(model, BadNetCNN) else 8
    data = torch.Generator().manual_seed(1000 + seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=data, dtype=torch.uint8)
    targets = torch.randint(0, 4, (n,), generator=data)
    test = images[:16]
    settings = {"epochs": 2, "batch_size": 16, "lr": 0.01, "lr_schedule": "cosine", **train}
    logged: list[dict[str, Any]] = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        m.eval()
        with torch.no_grad():
            out = m(test.float() / 255)
        return {"clean_acc": float((out.argmax(1) == targets[:16]).float().mean())}

    call = FitCall(
        model,
        TASK,
        images,
        targets,
        TrainConfig(**settings),
        CPU,
        torch.Generator().manual_seed(seed),
        evaluate,
        logged.append,
        stage or StagePlan(),
    )
    return call, logged


def alone(call: FitCall) -> list[dict[str, Any]]:
    return fit(
        call.model,
        call.task,
        call.images,
        call.targets,
        cfg=call.cfg,
        device=call.device,
        generator=call.generator,
        evaluate=call.evaluate,
        on_epoch=call.on_epoch,
        stage=call.stage,
        augment=call.augment,
    )


def small_cnn() -> nn.Module:
    return BadNetCNN(3, (16, 16), 4, width=4, hidden=16)


def small_resnet() -> nn.Module:
    return CifarResNet18(3, (8, 8), 4, width=4)


def assert_same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["epoch"] == y["epoch"]
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4, abs=1e-6)
        assert x["clean_acc"] == y["clean_acc"]


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    """Within float32 rounding, which batch norm amplifies over the steps."""
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(x.float(), y.float(), rtol=1e-3, atol=1e-4), name


@pytest.mark.parametrize(
    ("build", "settings"),
    [
        (small_cnn, [{"optimizer": "adam", "lr": 0.01}, {"optimizer": "adam", "lr": 0.001}]),
        (
            small_cnn,
            [
                {"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.01},
                {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0},
                {"optimizer": "sgd", "lr": 0.02, "momentum": 0.5, "weight_decay": 0.001},
            ],
        ),
        (
            small_resnet,
            [
                {"optimizer": "sgd", "lr": 0.02, "weight_decay": 5e-4},
                {"optimizer": "sgd", "lr": 0.01},
            ],
        ),
        (small_resnet, [{"optimizer": "adam", "lr": 0.001, "weight_decay": 1e-3}] * 2),
    ],
)
def test_each_member_of_a_stack_trains_as_it_would_alone(build, settings):
    """Own initial weights, data, order, learning rate, weight decay and momentum; batch
    norm's running statistics per member (the ResNet's buffers must match too)."""
    solo = [member(seed, build, **s) for seed, s in enumerate(settings)]
    histories = [alone(call) for call, _ in solo]
    stacked = [member(seed, build, **s) for seed, s in enumerate(settings)]
    results = fit_stacked([call for call, _ in stacked])
    for (call, logged), (solo_call, solo_logged), history, result in zip(
        stacked, solo, histories, results, strict=True
    ):
        assert isinstance(result, list)
        assert_same(result, history)
        assert_same(logged, solo_logged)
        assert_same_weights(call.model, solo_call.model)
    if build is small_resnet:  # the statistics moved, and differently per member
        means = [dict(c.model.named_buffers())["stem.1.running_mean"] for c, _ in stacked]
        assert not torch.allclose(means[0], means[1])
        assert not torch.allclose(means[0], torch.zeros_like(means[0]))


def broken(call: FitCall) -> FitCall:
    """The member with a NaN weight: its loss is not finite from the first batch."""
    with torch.no_grad():
        next(call.model.parameters()).view(-1)[0] = float("nan")
    return call


def test_a_member_whose_loss_is_not_finite_fails_alone_and_the_others_finish():
    with pytest.raises(RunFailed) as solo:
        alone(broken(member(1, small_cnn)[0]))
    assert "epoch 1: the training loss is not finite" in str(solo.value)
    expected = alone(member(0, small_cnn)[0])
    stack = [member(0, small_cnn)[0], broken(member(1, small_cnn)[0])]
    result_good, result_bad = fit_stacked(stack)
    assert isinstance(result_bad, RunFailed)
    assert str(result_bad) == str(solo.value)
    assert isinstance(result_good, list)
    assert_same(result_good, expected)


def test_a_member_whose_evaluation_fails_stops_and_the_others_finish():
    good, bad = member(0, small_cnn)[0], member(1, small_cnn)[0]

    def refuse(model: nn.Module) -> dict[str, float]:
        raise RunFailed("the model's outputs are not finite")

    bad.evaluate = refuse
    expected = alone(member(0, small_cnn)[0])
    result_good, result_bad = fit_stacked([good, bad])
    assert isinstance(result_bad, RunFailed)
    assert_same(result_good, expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_a_members_checkpoint_continues_alone_as_the_run_would(tmp_path, kind):
    """The stacked optimiser's state goes into a real optimiser: a member's checkpoint after
    epoch 1 of 2, resumed alone, ends where the member ended in the stack."""
    folders = [tmp_path / "a", tmp_path / "b"]
    rates = (0.01, 0.002)
    calls = []
    for seed, folder in enumerate(folders):
        folder.mkdir()
        (folder / "config.yaml").write_text(f"member: {seed}\n")  # what checkpoints digest
        stage = StagePlan(folder=folder)
        calls.append(
            member(
                seed, small_resnet, optimizer=kind, lr=rates[seed], checkpoint_every=1, stage=stage
            )[0]
        )
    fit_stacked(calls)
    for seed, (folder, call) in enumerate(zip(folders, calls, strict=True)):
        checkpoint = read_checkpoint(folder)
        assert checkpoint is not None and checkpoint.epoch == 1
        resumed, _ = member(
            seed, small_resnet, optimizer=kind, lr=rates[seed], stage=StagePlan(resume=checkpoint)
        )
        history = alone(resumed)
        assert history[-1]["train_loss"] == pytest.approx(fit_loss_of(call), rel=1e-4)
        assert_same_weights(resumed.model, call.model)


def fit_loss_of(call: FitCall) -> float:
    """The member's last logged loss (what its on_epoch received)."""
    logged = call.on_epoch.__self__  # type: ignore[attr-defined]
    return logged[-1]["train_loss"]


def test_calls_of_different_shapes_or_settings_are_not_stacked():
    a, _ = member(0, small_cnn)
    b, _ = member(1, small_cnn, lr=0.5, weight_decay=0.1)  # may share: only values differ
    c, _ = member(2, small_cnn, n=48)  # other data size
    d, _ = member(3, small_cnn, batch_size=8)
    e, _ = member(4, small_cnn, precision="bf16")
    f, _ = member(5, small_resnet)
    assert stack_key(e) is None
    assert group_calls([a, b, c, d, e, f]) == [[0, 1], [2], [3], [5], [4]]
    bytes_each = a.images.numel()
    assert group_calls([a, b, a, b, a], most_bytes=2 * bytes_each) == [[0, 1], [2, 3], [4]]


def sequential_bn() -> nn.Module:
    """A plain layer sequence with batch norm: the grouped forward's statistics per member."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 4),
    )


@pytest.mark.parametrize(
    ("build", "grouped"), [(small_cnn, True), (sequential_bn, True), (small_resnet, False)]
)
def test_plain_layer_sequences_train_grouped_and_others_through_vmap(build, grouped):
    settings = [{"optimizer": "sgd", "lr": 0.02}, {"optimizer": "sgd", "lr": 0.01}]
    stacked = [member(seed, build, **s)[0] for seed, s in enumerate(settings)]
    assert (_StackedFit(stacked).grouped is not None) == grouped
    solo = [member(seed, build, **s)[0] for seed, s in enumerate(settings)]
    histories = [alone(call) for call in solo]
    for call, result, history in zip(stacked, fit_stacked(stacked), histories, strict=True):
        assert_same(result, history)  # type: ignore[arg-type]
        assert_same_weights(call.model, solo[stacked.index(call)].model)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_members_continue_from_their_checkpoints_as_one_stack(tmp_path, kind):
    """A stack killed after its checkpoints continues as a stack (model, optimiser state,
    scheduler and order restored per member) and ends where it would have."""
    rates = (0.01, 0.002)
    whole = []
    for seed in (0, 1):
        folder = tmp_path / str(seed)
        folder.mkdir()
        (folder / "config.yaml").write_text(f"member: {seed}\n")
        whole.append(
            member(
                seed,
                small_resnet,
                optimizer=kind,
                lr=rates[seed],
                epochs=3,
                checkpoint_every=1,
                stage=StagePlan(folder=folder),
            )[0]
        )
    fit_stacked(whole)  # leaves each member's checkpoint after epoch 2 of 3
    resumed = []
    for seed in (0, 1):
        checkpoint = read_checkpoint(tmp_path / str(seed))
        assert checkpoint is not None and checkpoint.epoch == 2
        stage = StagePlan(resume=checkpoint)
        resumed.append(
            member(seed, small_resnet, optimizer=kind, lr=rates[seed], epochs=3, stage=stage)[0]
        )
    assert len(group_calls(resumed)) == 1  # they continue together
    results = fit_stacked(resumed)
    for call, result, reference in zip(resumed, results, whole, strict=True):
        assert isinstance(result, list) and [r["epoch"] for r in result] == [1, 2, 3]
        assert result[-1]["train_loss"] == pytest.approx(fit_loss_of(reference), rel=1e-4)
        assert_same_weights(call.model, reference.model)


@pytest.mark.parametrize("build", [small_cnn, small_resnet])
def test_members_augment_with_their_own_draws(build):
    """Random crop and flip per member from its own generator, as in its run alone."""

    def augmented(seed: int) -> FitCall:
        call = member(seed, build, optimizer="sgd", lr=0.02)[0]
        call.augment = Augment(["random_crop", "hflip"], 2, torch.Generator().manual_seed(7 + seed))
        return call

    solo = [augmented(seed) for seed in (0, 1)]
    histories = [alone(call) for call in solo]
    stacked = [augmented(seed) for seed in (0, 1)]
    for call, result, history, reference in zip(
        stacked, fit_stacked(stacked), histories, solo, strict=True
    ):
        assert_same(result, history)  # type: ignore[arg-type]
        assert_same_weights(call.model, reference.model)
