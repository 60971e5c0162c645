"""Stacked grids: which runs share a stack, and a stacked grid ends as one run by run."""

import json
from pathlib import Path

import pytest
from support.gridspecs import BASE, write_spec
from typer.testing import CliRunner

import triggerlab.run.stack_group as stack_group
import triggerlab.run.training as training
from triggerlab.cli import app
from triggerlab.errors import ArgumentError
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import GridSpec
from triggerlab.grid.stacking import stack_groups
from triggerlab.run.rundir import TIMING_COLUMNS, read_metrics


def spec_of(base=None, **fields) -> GridSpec:
    return GridSpec.model_validate({"base": base or BASE, **fields})


def sizes(spec: GridSpec, most: int) -> list[int]:
    return [len(stack) for stack in stack_groups(plan_grid(spec), most)]


def test_runs_that_differ_in_data_trigger_seed_and_rates_share_stacks():
    grid = {"poison.rate": [0.05, 0.1], "trigger.size": [2, 3], "train.lr": [0.01, 0.02]}
    spec = spec_of(grid={**grid, "poison.rate": [0.02, 0.05, 0.1]}, repeats=2)
    plan = plan_grid(spec)
    assert len(plan) == 24  # 12 cells x 2 repeats
    assert sizes(spec, 32) == [24]
    assert sizes(spec, 16) == [12, 12]  # as few stacks as the limit allows, of equal sizes
    assert sizes(spec, 5) == [5, 5, 5, 5, 4]
    assert sizes(spec, 1) == [1] * 24
    stacks = stack_groups(plan, 16)
    assert [r.run_id for s in stacks for r in s] == [r.run_id for r in plan]  # plan order kept
    # Clean baselines of cells that differ in their trigger share one training instead (one
    # per learning rate and repeat here): they are not stacked, the poisoned runs are.
    spec = spec_of(grid=grid, repeats=2, clean_baseline=True)
    groups = stack_groups(plan_grid(spec), 32)
    assert sorted(map(len, groups)) == [1] * 8 + [16]
    assert all(r.role == "baseline" and r.training_key for g in groups if len(g) == 1 for r in g)


def test_runs_of_other_shapes_or_steps_train_apart():
    spec = spec_of(grid={"train.epochs": [1, 2], "train.batch_size": [32, 64]})
    assert sizes(spec, 16) == [1, 1, 1, 1]
    spec = spec_of(grid={"model.options": [{"width": 4, "hidden": 32}, {"width": 8}]})
    assert sizes(spec, 16) == [1, 1]
    mixed = {**BASE, "train": {**BASE["train"], "precision": "bf16"}}
    assert sizes(spec_of(mixed, grid={"poison.rate": [0.05, 0.1]}), 16) == [1, 1]


def test_runs_poisoned_per_batch_train_alone(tmp_path):
    """WaNet and BppAttack poison in the training loop, which a stack has no hook for."""
    spec = spec_of(grid={"trigger": [{"kind": "warp", "grid": 2}, {"kind": "quantize"}]})
    assert sizes(spec, 16) == [1, 1]
    static = spec_of(
        grid={"trigger": [{"kind": "warp", "grid": 2}, {"kind": "patch"}]},
        base={**BASE, "poison": {**BASE["poison"], "schedule": "static"}},
    )
    assert sizes(static, 16) == [2]


def test_runs_that_share_a_trained_model_are_not_stacked():
    spec = spec_of(grid={"defense": [{"kind": "none"}, {"kind": "clp", "u": 2.0}]})
    assert sizes(spec, 16) == [1, 1]


def test_a_stack_size_outside_its_range_is_refused(tmp_path):
    with pytest.raises(ArgumentError, match="stack"):
        run_grid(spec_of(grid={"poison.rate": [0.1]}), tmp_path / "g", stack=0)
    assert not (tmp_path / "g").exists()
    spec = write_spec(tmp_path)
    result = CliRunner().invoke(app, ["grid", str(spec), "-o", str(tmp_path / "g"), "--stack", "0"])
    assert result.exit_code == 2
    assert "--stack: expected auto, or 1 (no stacking) to 1024, got 0" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "g").exists()
    result = CliRunner().invoke(app, ["grid", str(spec), "-o", str(tmp_path / "g"), "--stack", "x"])
    assert result.exit_code == 2
    assert "--stack: expected auto, or 1 (no stacking) to 1024, got 'x'" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "g").exists()


def metric_rows(run: Path) -> list[dict[str, float]]:
    rows = read_metrics(run / "metrics.csv")
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def finals(grid: Path) -> dict[str, dict[str, float]]:
    return {
        run.name: json.loads((run / "summary.json").read_text())["final"]
        for run in (grid / "runs").iterdir()
    }


def same_results(grid: Path, reference: Path) -> None:
    expected = finals(reference)
    got = finals(grid)
    assert got.keys() == expected.keys()
    for run_id, values in got.items():
        assert values == pytest.approx(expected[run_id], rel=1e-4, abs=1e-6), run_id
        rows = metric_rows(grid / "runs" / run_id)
        for row, want in zip(rows, metric_rows(reference / "runs" / run_id), strict=True):
            assert row == pytest.approx(want, rel=1e-4, abs=1e-6), run_id


def counting_stacks(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = stack_group.fit_stacked

    def counted(calls):
        sizes.append(len(calls))
        return real(calls)

    monkeypatch.setattr(stack_group, "fit_stacked", counted)
    return sizes


RESUMABLE = {
    **BASE,
    "train": {**BASE["train"], "epochs": 3, "optimizer": "sgd", "checkpoint_every": 1},
}
GRID = {"poison.rate": [0.05, 0.1], "trigger.size": [2, 3]}


@pytest.mark.slow
def test_a_stacked_grid_ends_as_the_same_grid_run_by_run(tmp_path, monkeypatch):
    spec = spec_of(RESUMABLE, grid=GRID)
    alone = run_grid(spec, tmp_path / "alone", threads=1, stack=1)
    stacks = counting_stacks(monkeypatch)
    stacked = run_grid(spec, tmp_path / "stacked", threads=1, stack=3)
    assert alone.ok and stacked.ok
    assert stacks == [2, 2]  # four runs in stacks of at most three: two of two
    same_results(tmp_path / "stacked", tmp_path / "alone")


@pytest.mark.slow
def test_a_stacked_grid_killed_mid_training_continues_each_run_from_its_checkpoint(
    tmp_path, monkeypatch
):
    spec = spec_of(RESUMABLE, grid=GRID)
    original = training.EpochLog.__call__

    def dying(self, record):
        original(self, record)
        if record["epoch"] == 3:  # after each run's checkpoint of epoch 2
            raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(training.EpochLog, "__call__", dying)
        first = run_grid(spec, tmp_path / "g", threads=1, stack=4)
    assert not first.ok and len(first.failed) == 4
    stacks = counting_stacks(monkeypatch)
    again = run_grid(spec, tmp_path / "g", threads=1, stack=4)
    assert again.ok and len(again.completed) == 4
    assert stacks == [4]  # they continue as one stack
    for run in (tmp_path / "g" / "runs").iterdir():
        assert json.loads((run / "summary.json").read_text())["resumed_from_epoch"] == 2
    run_grid(spec, tmp_path / "fresh", threads=1, stack=1)
    same_results(tmp_path / "g", tmp_path / "fresh")
