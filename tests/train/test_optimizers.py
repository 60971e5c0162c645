"""The written-out optimisers and cosine schedule give torch.optim's numbers bit for bit, keep
its state_dict format both ways, and leave PyTorch's compiler unimported."""

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from triggerlab.config import load_config
from triggerlab.train import loop
from triggerlab.train.checkpoint import TrainState, read_checkpoint
from triggerlab.train.loop import StagePlan, fit, make_optimizer, make_scheduler
from triggerlab.train.optimizers import SGD, Adam, CosineSchedule

SETTINGS = [
    ("adam", {"lr": 0.01, "weight_decay": 0.0}),
    ("adam", {"lr": 0.01, "weight_decay": 5e-4}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}),
    ("sgd", {"lr": 0.05, "momentum": 0.0, "weight_decay": 5e-4}),
]


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 3),
    )


def torch_optimizer(kind: str, params, settings: dict) -> torch.optim.Optimizer:
    return (torch.optim.Adam if kind == "adam" else torch.optim.SGD)(params, **settings)


def written_optimizer(kind: str, params, settings: dict):
    return (Adam if kind == "adam" else SGD)(params, **settings)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return torch.rand(8, 1, 9, 9, generator=generator), torch.randint(
        0, 3, (8,), generator=generator
    )


def train(model: nn.Module, optimizer, steps: range, scheduler=None) -> None:
    for step in steps:
        x, y = batch(step)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if scheduler is not None and step % 2 == 1:  # the rate changes between steps
            scheduler.step()


def assert_same_state(model_a: nn.Module, model_b: nn.Module, opt_a, opt_b) -> None:
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)
    state_a, state_b = opt_a.state_dict(), opt_b.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    assert state_a["state"].keys() == state_b["state"].keys()
    for index, values in state_a["state"].items():
        assert values.keys() == state_b["state"][index].keys()
        for key, value in values.items():
            other = state_b["state"][index][key]
            assert value.dtype == other.dtype and torch.equal(value, other), (index, key)


@pytest.mark.parametrize(("kind", "settings"), SETTINGS)
def test_steps_are_bitwise_torch_optims_with_a_cosine_schedule(kind, settings):
    theirs_model, ours_model = small_cnn(), small_cnn()
    theirs = torch_optimizer(kind, theirs_model.parameters(), settings)
    ours = written_optimizer(kind, ours_model.parameters(), settings)
    train(theirs_model, theirs, range(12), torch.optim.lr_scheduler.CosineAnnealingLR(theirs, 5))
    train(ours_model, ours, range(12), CosineSchedule(ours, 5))
    assert not torch.equal(theirs_model[0].weight, small_cnn()[0].weight)  # it did train
    assert_same_state(theirs_model, ours_model, theirs, ours)


@pytest.mark.parametrize(("kind", "settings"), SETTINGS)
def test_states_move_between_torch_optim_and_the_written_optimisers(kind, settings):
    # torch -> ours: continue from torch's state; ours -> torch: torch continues from ours
    start_model, reference_model = small_cnn(), small_cnn()
    start = torch_optimizer(kind, start_model.parameters(), settings)
    reference = torch_optimizer(kind, reference_model.parameters(), settings)
    train(start_model, start, range(3))
    train(reference_model, reference, range(6))

    ours_model = small_cnn()
    ours_model.load_state_dict(start_model.state_dict())
    ours = written_optimizer(kind, ours_model.parameters(), {**settings, "lr": 1.0})
    ours.load_state_dict(start.state_dict())  # its learning rate included
    train(ours_model, ours, range(3, 6))
    assert_same_state(reference_model, ours_model, reference, ours)

    back_model = small_cnn()
    back_model.load_state_dict(ours_model.state_dict())
    back = torch_optimizer(kind, back_model.parameters(), settings)
    back.load_state_dict(ours.state_dict())
    train(back_model, back, range(6, 9))
    train(reference_model, reference, range(6, 9))
    assert_same_state(reference_model, back_model, reference, back)


def test_parameters_without_gradients_keep_no_state_and_stay_put():
    model = small_cnn()
    model[0].weight.requires_grad_(False)
    ours = Adam(model.parameters(), lr=0.1)
    frozen = model[0].weight.clone()
    train(model, ours, range(2))
    assert torch.equal(model[0].weight, frozen)
    assert 0 not in ours.state_dict()["state"]
    assert float(ours.state_dict()["state"][1]["step"]) == 2.0


def test_a_state_that_does_not_fit_is_refused():
    model = small_cnn()
    ours = Adam(model.parameters())
    other = torch.optim.Adam(nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="doesn't match the size"):
        ours.load_state_dict(other.state_dict())
    amsgrad = torch.optim.Adam(model.parameters(), amsgrad=True)
    with pytest.raises(ValueError, match="amsgrad"):
        ours.load_state_dict(amsgrad.state_dict())


def rates(scheduler, optimizer, epochs: int) -> list[float]:
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_the_cosine_schedule_is_torchs_recursive_one_bit_for_bit():
    # past T_max too, where torch's recursion climbs again
    theirs = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.002)
    ours = SGD(nn.Linear(1, 1).parameters(), lr=0.002)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=40)
    our_schedule = CosineSchedule(ours, t_max=40)
    expected = rates(torch_schedule, theirs, 100)
    assert rates(our_schedule, ours, 100) == expected  # floats, compared exactly
    # the closed form differs in the last bits somewhere: matching it would not be enough
    closed = [0.001 * (1 + math.cos(math.pi * e / 40)) for e in range(40)]
    assert closed != expected[:40]
    assert our_schedule.state_dict() == torch_schedule.state_dict()
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]


def test_schedule_states_move_between_torch_and_the_written_schedule():
    theirs = torch.optim.Adam(nn.Linear(1, 1).parameters(), lr=0.01)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=12)
    rates(torch_schedule, theirs, 5)
    ours = Adam(nn.Linear(1, 1).parameters(), lr=0.01)
    our_schedule = CosineSchedule(ours, t_max=12)
    ours.load_state_dict(theirs.state_dict())
    our_schedule.load_state_dict(json.loads(json.dumps(torch_schedule.state_dict())))
    assert rates(our_schedule, ours, 9) == rates(torch_schedule, theirs, 9)

    back = torch.optim.Adam(nn.Linear(1, 1).parameters(), lr=0.01)
    back_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(back, T_max=12)
    back.load_state_dict(ours.state_dict())
    back_schedule.load_state_dict(our_schedule.state_dict())
    assert rates(back_schedule, back, 6) == rates(torch_schedule, theirs, 6)


# ---- in the loop ---------------------------------------------------------------------------


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Classes:
    """The loop's objective, as small as it gets."""

    metric_names = ("weight_sum",)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(1)


def fit_tiny(cfg, folder=None, resume=None) -> list[dict]:
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (40, 1, 4, 4), generator=generator, dtype=torch.uint8)
    targets = torch.randint(0, 3, (40,), generator=generator)
    model = Flat()
    history = fit(
        model,
        Classes(),
        images,
        targets,
        cfg=cfg,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(5),
        evaluate=lambda m: {"weight_sum": float(m.net[1].weight.detach().sum())},
        on_epoch=lambda record: None,
        stage=StagePlan(folder=folder, resume=resume),
    )
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in history]


def torch_optim_in_the_loop(monkeypatch) -> None:
    """The loop as it was: torch.optim's optimiser and CosineAnnealingLR."""

    def old_optimizer(cfg, model):
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def old_scheduler(cfg, optimizer):
        if cfg.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        return None

    monkeypatch.setattr(loop, "make_optimizer", old_optimizer)
    monkeypatch.setattr(loop, "make_scheduler", old_scheduler)


TINY = ["train.epochs=4", "train.batch_size=8", "train.weight_decay=0.001"]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fit_records_the_same_history_as_with_torch_optim(monkeypatch, optimizer):
    cfg = load_config(None, [*TINY, f"train.optimizer={optimizer}"]).train
    ours = fit_tiny(cfg)
    with monkeypatch.context() as patch:
        torch_optim_in_the_loop(patch)
        theirs = fit_tiny(cfg)
    assert ours == theirs
    assert len({r["weight_sum"] for r in ours}) == 4  # every epoch moved the weights


@pytest.mark.parametrize("written_by", ["torch.optim", "the written optimisers"])
def test_checkpoints_resume_across_the_change(monkeypatch, tmp_path, written_by):
    """A checkpoint torch.optim wrote resumes with the written optimisers, and the reverse,
    to the uninterrupted run's numbers."""
    cfg = load_config(None, [*TINY, "train.optimizer=sgd", "train.checkpoint_every=2"]).train
    whole = fit_tiny(cfg)
    (tmp_path / "config.yaml").write_text("the run's config\n")  # checkpoints name its digest
    with monkeypatch.context() as patch:
        if written_by == "torch.optim":
            torch_optim_in_the_loop(patch)
        assert fit_tiny(cfg, folder=tmp_path) == whole
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.epoch == 2
    with monkeypatch.context() as patch:
        if written_by != "torch.optim":
            torch_optim_in_the_loop(patch)
        assert fit_tiny(cfg, resume=checkpoint) == whole


def test_the_state_saved_is_torch_optims(monkeypatch):
    cfg = load_config(None, [*TINY, "train.optimizer=adam"]).train
    settings = []
    for patched in (False, True):
        with monkeypatch.context() as patch:
            if patched:
                torch_optim_in_the_loop(patch)
            model = Flat()
            optimizer = loop.make_optimizer(cfg, model)
            scheduler = loop.make_scheduler(cfg, optimizer)
            state = TrainState(model, optimizer, scheduler, None, {})
            settings.append(json.dumps(state.settings(), sort_keys=True))
    assert settings[0] == settings[1]


def test_training_imports_no_compiler():
    """torch.optim's first use imports torch._dynamo (about a second per process): the loop's
    optimisers and schedule must not."""
    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from triggerlab.config import load_config\n"
        "from triggerlab.train.loop import make_optimizer, make_scheduler\n"
        "for kind in ('adam', 'sgd'):\n"
        "    cfg = load_config(None, [f'train.optimizer={kind}']).train\n"
        "    model = nn.Linear(2, 2)\n"
        "    optimizer = make_optimizer(cfg, model)\n"
        "    scheduler = make_scheduler(cfg, optimizer)\n"
        "    model(torch.ones(1, 2)).sum().backward()\n"
        "    optimizer.step(); optimizer.zero_grad(); scheduler.step()\n"
        "    optimizer.load_state_dict(optimizer.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_make_optimizer_and_scheduler_give_the_written_ones():
    cfg = load_config(None, ["train.optimizer=sgd", "train.epochs=7"]).train
    optimizer = make_optimizer(cfg, nn.Linear(2, 2))
    assert isinstance(optimizer, SGD)
    assert optimizer.param_groups[0]["momentum"] == cfg.momentum
    scheduler = make_scheduler(cfg, optimizer)
    assert isinstance(scheduler, CosineSchedule) and scheduler.T_max == 7
