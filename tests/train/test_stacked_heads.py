"""Heads on cached features trained as one stack of heads: each member's records and weights
are those ``fit_head`` gives it alone, the features held once, and a failing member fails
alone."""

import pytest
import torch
from torch import nn

from triggerlab.attack.tasks import ClassificationTask
from triggerlab.config import PoisonConfig, load_config
from triggerlab.errors import RunFailed
from triggerlab.train.heads import fit_head
from triggerlab.train.stacked import FitCall
from triggerlab.train.stacked_heads import fit_heads, head_key, shared_table

CPU = torch.device("cpu")
CLASSES, WIDTH, SIZE = 5, 24, 70
TASK = ClassificationTask(PoisonConfig(target=0), [str(c) for c in range(CLASSES)])
TEST = torch.randn(40, WIDTH, generator=torch.Generator().manual_seed(9))
CLEAN = torch.randn(SIZE, WIDTH, generator=torch.Generator().manual_seed(1)).half()
LABELS = torch.randint(0, CLASSES, (SIZE,), generator=torch.Generator().manual_seed(2))


def evaluate(model):
    """A metric that moves with every weight: the mean output on fixed test features."""
    with torch.no_grad():
        return {"clean_acc": float(model(TEST).mean())}


def member(index, seed, lr, poisoned=(), weight_decay=0.0):
    """One run's head: the clean features with its own poisoned rows (new features, the
    target label), its own initial weights, batch order seed and rates."""
    features, targets = CLEAN.clone(), LABELS.clone()
    own = torch.Generator().manual_seed(100 + index)
    features[list(poisoned)] = torch.randn(len(poisoned), WIDTH, generator=own).half()
    targets[list(poisoned)] = 0
    torch.manual_seed(index)
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "train.batch_size=16",
            f"train.lr={lr}",
            f"train.weight_decay={weight_decay}",
        ],
    ).train
    logged = []
    call = FitCall(
        nn.Linear(WIDTH, CLASSES),
        TASK,
        features,
        targets,
        cfg,
        CPU,
        torch.Generator().manual_seed(seed),
        evaluate,
        logged.append,
    )
    return call, logged


TIMING = ("epoch_time_s", "train_time_s", "train_images_per_s")


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


MEMBERS = [
    (0, 7, 0.01, ()),
    (1, 7, 0.003, (3, 17)),
    (2, 7, 0.02, (17, 40, 69)),
    (3, 8, 0.01, (0,), 0.01),  # its own batch order: the stack steps each member's own rows
]


@pytest.mark.parametrize("count", [3, 4], ids=["one batch order", "own batch orders"])
def test_a_stack_of_heads_gives_each_member_what_it_gets_alone(count):
    stacked = [member(*m) for m in MEMBERS[:count]]
    assert len({head_key(call) for call, _ in stacked}) == 1
    results = fit_heads([call for call, _ in stacked])
    for spec, (call, logged), result in zip(MEMBERS[:count], stacked, results, strict=True):
        alone, _ = member(*spec)
        history = fit_head(
            alone.model,
            TASK,
            alone.images,
            alone.targets,
            cfg=alone.cfg,
            device=CPU,
            generator=alone.generator,
            evaluate=evaluate,
            on_epoch=lambda _r: None,
        )
        assert logged == result  # each member's on_epoch saw its records, as they were made
        assert len(result) == 3
        # float32 sums in another order (one wide product against a batched one): rounding
        for mine, theirs in zip(without_timing(result), without_timing(history), strict=True):
            assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-6)
        assert torch.allclose(call.model.weight, alone.model.weight, atol=1e-5)
        assert torch.allclose(call.model.bias, alone.model.bias, atol=1e-5)


def test_the_table_holds_the_shared_rows_once():
    calls = [member(*m)[0] for m in MEMBERS]
    table, rows = shared_table([c.images for c in calls])
    assert table.shape == (SIZE + 2 + 3 + 1, WIDTH)  # the clean rows, then each one's own
    for call, own in zip(calls, rows, strict=True):
        assert torch.equal(table[own], call.images)


def test_a_member_whose_loss_is_not_finite_fails_alone():
    calls = [member(*m)[0] for m in MEMBERS[:3]]  # one batch order: one wide product
    calls[1].images[20] = float("nan")
    results = fit_heads(calls)
    assert isinstance(results[1], RunFailed)
    assert "epoch 1: the training loss is not finite" in str(results[1])
    assert [len(results[0]), len(results[2])] == [3, 3]
