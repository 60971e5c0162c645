"""A frozen-backbone grid stacked: its runs' heads train as one stack of heads on the shared
feature cache, and every run ends with the metrics it has alone."""

import json
from pathlib import Path

import pytest
from support.gridspecs import BASE

import triggerlab.run.stack_group as stack_group
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import GridSpec
from triggerlab.run.rundir import TIMING_COLUMNS, read_metrics

FROZEN = {
    **BASE,
    "model": {**BASE["model"], "freeze": "classifier"},  # the last linear layer, on the cache
    "train": {**BASE["train"], "epochs": 3, "lr_schedule": "cosine", "lr": 0.01},
}
GRID = {"poison.rate": [0.05, 0.1], "trigger.size": [2, 3], "train.weight_decay": [0.0, 0.01]}


def metric_rows(run: Path) -> list[dict[str, float]]:
    rows = read_metrics(run / "metrics.csv")
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.mark.slow
def test_a_frozen_backbone_grid_trains_its_heads_as_one_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))
    spec = GridSpec.model_validate({"base": FROZEN, "grid": GRID, "repeats": 2})
    alone = run_grid(spec, tmp_path / "alone", threads=1, stack=1)
    stacks: list[int] = []
    real = stack_group.fit_heads

    def counted(calls):
        stacks.append(len(calls))
        return real(calls)

    monkeypatch.setattr(stack_group, "fit_heads", counted)
    stacked = run_grid(spec, tmp_path / "stacked", threads=1)  # the default: stack=auto
    assert alone.ok and stacked.ok and len(stacked.completed) == 16
    assert stacks == [8, 8]  # auto: heads stack with the runs of their seed (2 repeats)
    for run in (tmp_path / "alone" / "runs").iterdir():
        mine = tmp_path / "stacked" / "runs" / run.name
        assert summary(mine)["feature_cache"]["used"]
        assert summary(run)["stack"] is None
        assert {k: summary(mine)["stack"][k] for k in ("members", "trainer")} == {
            "members": 8,
            "trainer": "heads",
        }
        # Float32 sums in another order (one wide product for the members that share a batch
        # order, a batched one alone) differ in the last bits of a step; over 3 epochs of 8
        # small steps that stays far below 1e-5, and no test sample of this fixed grid lies
        # that close to a decision boundary, so the accuracies are the same counts.
        for row, want in zip(metric_rows(mine), metric_rows(run), strict=True):
            assert row == pytest.approx(want, rel=1e-5, abs=1e-6), run.name
        assert summary(mine)["final"] == pytest.approx(summary(run)["final"], rel=1e-5, abs=1e-6)
