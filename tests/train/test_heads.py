"""Linear heads on cached features: the written-out training gives ``fit``'s numbers, alone
and as a member of a stack."""

import pytest
import torch
from torch import nn

from triggerlab.attack.tasks import ClassificationTask, RegressionTask
from triggerlab.config import PoisonConfig, load_config
from triggerlab.data.labels import Labels
from triggerlab.errors import RunFailed
from triggerlab.train import heads
from triggerlab.train.heads import (
    EpochResult,
    fit_head,
    rule_of,
    stack_of,
    train_heads,
    why_not_fast,
)
from triggerlab.train.loop import StagePlan, fit

CPU = torch.device("cpu")
CLASSES = 5
WIDTH = 24
TEST = torch.randn(40, WIDTH, generator=torch.Generator().manual_seed(9)).half()


def classification():
    return ClassificationTask(PoisonConfig(target=0), [str(c) for c in range(CLASSES)])


def regression(loss):
    return RegressionTask(PoisonConfig(target=[0.0, 1.0]), Labels(("a", "b")), loss=loss)


def problem(seed, task, size=67):
    """Float16 features (as the cache stores them) and targets for ``task``."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(size, WIDTH, generator=generator).half()
    if task.is_regression:
        return features, torch.randn(size, 2, generator=generator)
    return features, torch.randint(0, CLASSES, (size,), generator=generator)


def head(seed, outputs=CLASSES):
    torch.manual_seed(seed)
    return nn.Linear(WIDTH, outputs)


def evaluate(model):
    """A metric that moves with every weight: the mean output on fixed test features."""
    with torch.no_grad():
        return {"clean_acc": float(model(TEST.float()).mean())}


def train_with(trainer, task, cfg, seed=0):
    model = head(seed, 2 if task.is_regression else CLASSES)
    features, targets = problem(seed, task)
    logged = []
    history = trainer(
        model,
        task,
        features,
        targets,
        cfg=cfg,
        device=CPU,
        generator=torch.Generator().manual_seed(seed + 100),
        evaluate=evaluate,
        on_epoch=logged.append,
    )
    assert logged == history
    return model, history


SETTINGS = [
    ("classification", ["train.optimizer=adam", "train.lr=0.01", "train.weight_decay=0.01"]),
    ("classification", ["train.optimizer=sgd", "train.lr=0.1", "train.momentum=0.9"]),
    ("classification", ["train.optimizer=sgd", "train.lr=0.1", "train.momentum=0"]),
    ("mse", ["train.optimizer=adam", "train.lr=0.01", "train.lr_schedule=constant"]),
    ("l1", ["train.optimizer=sgd", "train.lr=0.05", "train.weight_decay=0.001"]),
]


@pytest.mark.parametrize(("kind", "settings"), SETTINGS)
def test_a_head_trains_to_fits_numbers(kind, settings):
    task = classification() if kind == "classification" else regression(kind)
    # 67 samples in batches of 16: the last batch of 3, then of 1 (skipped, as fit skips it)
    cfg = load_config(None, ["train.epochs=4", "train.batch_size=16", *settings]).train
    slow, expected = train_with(fit, task, cfg)
    fast, found = train_with(fit_head, task, cfg)
    assert torch.allclose(fast.weight, slow.weight, atol=1e-5)
    assert torch.allclose(fast.bias, slow.bias, atol=1e-5)
    assert len(found) == len(expected) == 4
    for mine, theirs in zip(found, expected, strict=True):
        assert mine["epoch"] == theirs["epoch"] and mine["train_images_per_s"] > 0
        for name in ("train_loss", "clean_acc"):
            assert mine[name] == pytest.approx(theirs[name], rel=1e-5, abs=1e-6)


def test_a_stacks_members_train_as_each_would_alone():
    """Three runs with their own data, targets, batch orders, rates and weight decay: one
    stack over one feature table gives each the weights it gets alone."""
    task = classification()
    table, _ = problem(5, task, size=90)
    table = table.float()
    cfgs = [
        load_config(None, ["train.epochs=3", "train.batch_size=8", *extra]).train
        for extra in (["train.lr=0.01"], ["train.lr=0.003", "train.weight_decay=0.1"], [])
    ]
    members = range(len(cfgs))
    rows = torch.stack(
        [torch.randperm(90, generator=torch.Generator().manual_seed(m))[:50] for m in members]
    )
    targets = torch.randint(0, CLASSES, (3, 50), generator=torch.Generator().manual_seed(1))
    alone = []
    for m in members:
        model = head(m)
        fit(
            model,
            task,
            table[rows[m]],
            targets[m],
            cfg=cfgs[m],
            device=CPU,
            generator=torch.Generator().manual_seed(m),
            evaluate=lambda _m: {},
            on_epoch=lambda _r: None,
        )
        alone.append(model)
    stack = stack_of([head(m) for m in members], cfgs)
    epochs: list[EpochResult] = []
    generators = [torch.Generator().manual_seed(m) for m in members]
    train_heads(stack, rule_of(cfgs[0], task), table, rows, targets, generators, epochs.append)
    assert [e.epoch for e in epochs] == [1, 2, 3] and epochs[0].seen == 50
    for m in members:
        assert torch.allclose(stack.weight[m], alone[m].weight, atol=1e-5)
        assert torch.allclose(stack.bias[m], alone[m].bias, atol=1e-5)
    outputs = stack.outputs(TEST)
    assert torch.allclose(outputs[1], alone[1](TEST.float()), atol=1e-5)


def alone(task, cfg, table, rows, targets, seed, init):
    model = head(init)
    fit(
        model,
        task,
        table[rows],
        targets,
        cfg=cfg,
        device=CPU,
        generator=torch.Generator().manual_seed(seed),
        evaluate=lambda _m: {},
        on_epoch=lambda _r: None,
    )
    return model


def test_members_with_one_batch_order_share_their_products_and_train_as_alone():
    """Runs of a grid that share a seed visit the same positions in the same order and
    differ in a few rows (their poisoned samples) and labels: they read each batch once,
    and each still gets the weights it gets alone."""
    task = classification()
    table, _ = problem(6, task, size=80)
    table = table.float()
    generator = torch.Generator().manual_seed(2)
    base = torch.randperm(60, generator=generator)
    rows = base.repeat(4, 1)
    targets = torch.randint(0, CLASSES, (60,), generator=generator).repeat(4, 1)
    for member, changed in enumerate([[], [3, 17], [17, 40, 59], [0]]):
        rows[member, changed] = torch.arange(60, 60 + len(changed))  # rows only it has
        targets[member, changed] = member
    cfgs = [
        load_config(None, ["train.epochs=3", "train.batch_size=16", f"train.lr={lr}"]).train
        for lr in (0.01, 0.003, 0.02, 0.01)
    ]
    stack = stack_of([head(m) for m in range(4)], cfgs)
    generators = [torch.Generator().manual_seed(7) for _ in range(4)]
    epochs: list[EpochResult] = []
    train_heads(stack, rule_of(cfgs[0], task), table, rows, targets, generators, epochs.append)
    for m in range(4):
        single = alone(task, cfgs[m], table, rows[m], targets[m], 7, m)
        assert torch.allclose(stack.weight[m], single.weight, atol=1e-5)
        assert torch.allclose(stack.bias[m], single.bias, atol=1e-5)
    single_history = fit(
        head(2),
        task,
        table[rows[2]],
        targets[2],
        cfg=cfgs[2],
        device=CPU,
        generator=torch.Generator().manual_seed(7),
        evaluate=lambda _m: {},
        on_epoch=lambda _r: None,
    )
    found = [float(e.losses[2]) for e in epochs]
    assert found == pytest.approx([r["train_loss"] for r in single_history], rel=1e-5)


def test_a_loss_that_is_not_finite_fails_the_run_as_fit_does():
    task = classification()
    cfg = load_config(None, ["train.epochs=2", "train.batch_size=16"]).train
    features, targets = problem(0, task)
    features[40] = float("nan")  # in some batch of the first epoch

    def failure(trainer):
        with pytest.raises(RunFailed) as caught:
            trainer(
                head(0),
                task,
                features,
                targets,
                cfg=cfg,
                device=CPU,
                generator=torch.Generator().manual_seed(3),
                evaluate=evaluate,
                on_epoch=lambda _r: None,
            )
        return str(caught.value)

    assert failure(fit_head) == failure(fit)
    assert "epoch 1: the training loss is not finite" in failure(fit_head)


def test_what_the_written_out_training_leaves_to_fit(tmp_path):
    task = classification()
    features, _ = problem(0, task)
    cfg = load_config(None, []).train
    assert why_not_fast(head(0), task, features, cfg, None, None) is None
    deep = nn.Sequential(nn.Dropout(0.5), nn.Linear(WIDTH, CLASSES))
    assert "not a linear layer" in why_not_fast(deep, task, features, cfg, None, None)
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    assert "feature vectors" in why_not_fast(head(0), task, images, cfg, None, None)
    bf16 = load_config(None, ["train.precision=bf16"]).train
    assert "mixed precision" in why_not_fast(head(0), task, features, bf16, None, None)
    saving = StagePlan(folder=tmp_path)
    assert "checkpoints" in why_not_fast(head(0), task, features, cfg, saving, None)
    frozen = head(0)
    frozen.bias.requires_grad_(False)
    assert "frozen" in why_not_fast(frozen, task, features, cfg, None, None)
    assert heads.loss_kind(regression("mse")) == "mse"
