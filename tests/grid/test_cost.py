"""The cost planner: FLOPs against hand counts, the plan's kinds and cache reasons, the
estimates' arithmetic, the saved calibration, and the `plan` command."""

import json
import os
import re

import pytest
import torch
import yaml
from support.gridspecs import BASE
from torch import nn
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.grid import cost
from triggerlab.grid.cost import Calibration, count_flops, grid_cost
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.spec import load_grid_spec
from triggerlab.models import factory_of
from triggerlab.train.loop import EVAL_BATCH_SIZE

runner = CliRunner()


def conv_flops(c_out: int, c_in: int, k: int, side: int) -> int:
    """2 FLOPs per multiply-add: each output pixel of each output channel sums c_in*k*k."""
    return 2 * c_out * c_in * k * k * side * side


def test_linear_head_flops_by_hand():
    head = nn.Linear(64, 10)
    counted = count_flops(head, (64,))
    assert counted.forward == 2 * 64 * 10
    # backward: the weights' gradient only (the features need none); the bias's is a sum
    assert counted.train == 2 * 64 * 10 + 2 * 64 * 10


def test_small_cnn_flops_by_hand_on_the_meta_device():
    with torch.device("meta"):
        model = factory_of("small_cnn")(1, (16, 16), 10, width=4, hidden=32)
    # conv 5x5 1->4 on 16 px: 12 px; pool: 6; conv 5x5 4->8: 2 px; pool: 1; 8 -> 32 -> 10
    conv1, conv2 = conv_flops(4, 1, 5, 12), conv_flops(8, 4, 5, 2)
    fc1, fc2 = 2 * 8 * 32, 2 * 32 * 10
    forward = conv1 + conv2 + fc1 + fc2
    counted = count_flops(model, (1, 16, 16))
    assert counted.forward == forward == 36_352
    # backward: each layer's input gradient and weight gradient cost its forward, except the
    # first convolution's input gradient (the images need none)
    assert counted.train == forward + 2 * forward - conv1


def test_a_depthwise_convolution_backward_counts_its_groups():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    counted = count_flops(conv, (8, 6, 6))
    assert counted.forward == 2 * 8 * 1 * 9 * 36
    assert counted.train == 2 * counted.forward  # forward + the weights' gradient


def write(tmp_path, grid, base=None, **fields):
    spec = {"base": base or BASE, "grid": grid, "repeats": 1, **fields}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def plan_of(path):
    return plan_grid(load_grid_spec(path, []))


def test_kinds_cache_reasons_and_shared_trainings(tmp_path):
    base = {**BASE, "model": {"name": "lenet5", "freeze": "classifier"}}
    path = write(
        tmp_path,
        {"train.augment": [[], ["hflip"]], "defense.kind": ["none", "clp"]},
        base=base,
    )
    plan = plan_of(path)
    found = grid_cost(plan)
    assert found.runs == 4
    assert found.trainings == 2  # the two defences of each cell share one trained model
    by_cache = {k.cached: k for k in found.kinds}
    cached, uncached = by_cache[True], by_cache[False]
    assert uncached.reason.startswith("train.augment")
    assert (cached.runs, cached.trainings, uncached.trainings) == (2, 1, 1)
    # the cached kind trains the last linear layer (84 -> 10) on features
    assert cached.input_shape == [84]
    assert cached.flops_per_sample["forward"] == 2 * 84 * 10
    assert cached.flops_per_sample["train"] == 4 * 84 * 10
    assert cached.trainable_parameters == 84 * 10 + 10
    assert cached.flops_per_sample["body_forward"] == uncached.flops_per_sample["forward"]
    assert cached.cache_builds == 1  # one seed: one body, one cache
    lines = "\n".join(found.lines())
    assert "trainings after sharing: 2" in lines
    assert "not cached: train.augment" in lines
    assert "stacking: auto, where it pays: 0 of 4 runs in stacks (4 x 1)" in lines
    assert "alone: its trained model is shared with other runs: 4 runs" in lines
    assert "defences are not counted" in lines


def test_whole_network_and_trainable_batch_norm_are_not_cached(tmp_path):
    base = {**BASE, "model": {"name": "resnet18_cifar"}, "data": {"name": "digits", "resize": 8}}
    path = write(tmp_path, {"model.freeze": ["none", "classifier_and_bn", "classifier"]}, base=base)
    kinds = {k.label: k for k in grid_cost(plan_of(path)).kinds}
    reasons = {label.split("freeze ")[-1].split(",")[0]: k.reason for label, k in kinds.items()}
    assert reasons["classifier_and_bn"].startswith("batch norm trains")
    assert reasons["classifier"] is None
    assert [r for r in reasons.values() if r and "model.freeze: none" in r]


def test_the_plan_refuses_the_cache_where_the_run_will(tmp_path):
    """Per-batch poisoning, batch statistics in training mode: the plan says what the run does."""
    base = {**BASE, "model": {"name": "resnet18_cifar", "freeze": "classifier"}}
    base["data"] = {"name": "digits", "resize": 8}
    path = write(tmp_path, {"model.frozen_mode": ["eval", "train"]}, base=base)
    reasons = sorted(str(k.reason) for k in grid_cost(plan_of(path)).kinds)
    assert reasons[0] == "None" and reasons[1].startswith("model.frozen_mode: train runs")
    warp = {**BASE, "trigger": {"kind": "warp", "grid": 2}, "model": base["model"]}
    warp["data"] = base["data"]
    path = write(tmp_path, {"poison.rate": [0.1]}, base=warp)
    (kind,) = grid_cost(plan_of(path)).kinds
    assert kind.reason.startswith("poison.schedule is per_batch")


def test_training_flops_and_estimates_are_the_counts_times_the_work(tmp_path):
    path = write(tmp_path, {"poison.rate": [0.05, 0.1]})
    calibration = Calibration(1e9, 0.5, 1e-3, 1, "test", 0.0, 0.0)
    found = grid_cost(plan_of(path), calibration=calibration, accelerator="a100", utilization=0.5)
    (kind,) = found.kinds
    per = kind.flops_per_sample
    train, test = kind.train_samples, kind.test_samples
    assert train + test == 1797  # the digits
    one = per["train"] * train * 1 + per["forward"] * 2 * test * 1  # one epoch, then evaluation
    assert kind.training_flops() == one
    assert found.total_flops() == 2 * one
    steps, evaluations = -(-train // 64), 2 * -(-test // EVAL_BATCH_SIZE)
    assert kind.batches() == (steps, evaluations)
    # measured here: each batch at the time its kind's step took
    assert kind.step_s > 0 and kind.evaluation_batch_s > 0
    measured = 2 * (steps * kind.step_s + evaluations * kind.evaluation_batch_s)
    assert found.here_s() == pytest.approx(measured + 2 * cost.FIXED_COST_S)
    assert kind.achieved_flops_per_s() == pytest.approx(64 * per["train"] / kind.step_s)
    # unmeasured: each batch at its FLOPs at 0.5 GFLOP/s, or the 1 ms floor when longer
    kind.step_s = kind.evaluation_batch_s = None
    batch = max(1e-3, 64 * per["train"] / 0.5e9)
    evaluation = max(1e-3, min(EVAL_BATCH_SIZE, test) * per["forward"] / 0.5e9)
    expected = 2 * (steps * batch + evaluations * evaluation) + 2 * cost.FIXED_COST_S
    assert found.here_s() == pytest.approx(expected)
    assert found.accelerator_s() == pytest.approx(2 * one / (312e12 * 0.5) + 2 * cost.FIXED_COST_S)


def test_calibration_is_measured_once_and_a_damaged_one_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path))
    measured = []
    real = cost.calibrate

    def quick(seconds=1.0, threads=None):
        measured.append(threads)
        return real(0.02, threads)

    monkeypatch.setattr(cost, "calibrate", quick)
    first = cost.machine_calibration(1)
    assert first.matmul_flops_per_s > 0 and 0 < first.utilization <= 1 and first.batch_s > 0
    assert first.threads == 1
    assert cost.machine_calibration(1) == first and measured == [1]
    (tmp_path / "calibration-1-threads.json").write_text("{not json")
    cost.machine_calibration(1)
    assert measured == [1, 1]
    cost.machine_calibration(1, recalibrate=True)
    assert measured == [1, 1, 1]


@pytest.fixture
def quick_calibration(tmp_path, monkeypatch):
    """A calibration of a few milliseconds, kept under the test's own cache folder."""
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))
    real = cost.calibrate
    monkeypatch.setattr(cost, "calibrate", lambda seconds=1.0, threads=None: real(0.02, threads))


def test_plan_command_prints_and_writes_json(tmp_path, quick_calibration):
    path = write(tmp_path, {"poison.rate": [0.05, 0.1]})
    out = tmp_path / "out" / "plan.json"
    result = runner.invoke(app, ["plan", str(path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "runs: 2; trainings after sharing: 2" in result.output
    assert "estimated wall time on one H100" in result.output
    assert "stacking: auto, where it pays: 2 of 2 runs in stacks (1 x 2)" in result.output
    assert "whole models on the CPU at 8.03e+04 training FLOP a sample: 2 runs" in result.output
    off = runner.invoke(app, ["plan", str(path), "--stack", "1"])
    assert off.exit_code == 0 and "stacking: off: each run trains alone" in off.output
    saved = json.loads(out.read_text())
    assert saved["runs"] == 2 and saved["total_flops"] > 0
    assert saved["accelerator"]["utilization"] == 0.2
    assert not (tmp_path / "grids").exists()  # nothing run
    (saved,) = (tmp_path / "cache").iterdir()  # the calibration, and nothing else
    assert saved.name == f"calibration-{max(1, os.cpu_count() or 1)}-threads.json"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--accelerator", "tpu"], "--accelerator: unknown 'tpu'"),
        (["--utilization", "0"], "--utilization: expected a share in (0, 1]"),
        (["--workers", "0"], "--workers: expected at least 1"),
        (["--set", "grid.poison.rate=[7]"], "poison.rate"),
    ],
)
def test_plan_command_refuses_bad_input_with_exit_2(tmp_path, flags, message, quick_calibration):
    path = write(tmp_path, {"poison.rate": [0.05, 0.1]})
    result = runner.invoke(app, ["plan", str(path), *flags, "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "p.json").exists()


@pytest.mark.slow
def test_grid_prints_the_plan_first_and_the_estimate_beside_the_measured_time(tmp_path):
    path = write(tmp_path, {"poison.rate": [0.1]})
    result = runner.invoke(app, ["grid", str(path), "--out", str(tmp_path / "g"), "--quiet"])
    assert result.exit_code == 0, result.output
    output = result.output
    assert output.index("runs: 1; trainings after sharing: 1") < output.index("estimated ")
    assert re.search(r"time: estimated [0-9.]+ s, measured [0-9.]+ s \(1 of the 1 runs", output)
    again = runner.invoke(app, ["grid", str(path), "--out", str(tmp_path / "g"), "--no-estimate"])
    assert again.exit_code == 0 and "trainings after sharing" not in again.output
    finished = runner.invoke(app, ["grid", str(path), "--out", str(tmp_path / "g")])
    assert finished.exit_code == 0  # the estimate counts what is left: nothing
    assert "runs: 0; trainings after sharing: 0" in finished.output
    assert "time: estimated" not in finished.output


def test_the_plan_says_how_runs_stack():
    from support.gridspecs import BASE

    from triggerlab.grid.cost import grid_cost
    from triggerlab.grid.plan import plan_grid
    from triggerlab.grid.spec import GridSpec

    spec = GridSpec.model_validate(
        {"base": BASE, "grid": {"poison.rate": [0.05, 0.1], "trigger.size": [2, 3]}, "repeats": 2}
    )
    plan = plan_grid(spec)
    line = grid_cost(plan, stack=3).stacking
    assert line == (
        "up to 3 runs a stack: 8 of 8 runs in stacks (2 x 3, 1 x 2); "
        "the estimates count every run alone"
    )
    assert grid_cost(plan, stack=1).stacking.startswith("off")
    assert grid_cost(plan).stacking == (  # auto, the default: the small CNN's steps are tiny
        "auto, where it pays: 8 of 8 runs in stacks (1 x 8); whole models on the CPU at "
        "8.03e+04 training FLOP a sample: 8 runs; the estimates count every run alone"
    )
