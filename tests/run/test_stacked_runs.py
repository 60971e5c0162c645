"""Runs whose training is stacked end exactly as each would alone, each in its own folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from triggerlab.config import load_config
from triggerlab.run.experiment import run_experiment
from triggerlab.run.rundir import TIMING_COLUMNS, read_metrics
from triggerlab.run.stack_group import run_stacked

TINY = [
    "data.name=digits",
    "data.resize=16",
    "model.name=small_cnn",
    "model.options={width: 4, hidden: 32}",
    "train.device=cpu",
    "train.epochs=2",
    "train.batch_size=64",
    "train.optimizer=sgd",
    "train.checkpoint_every=1",
]
MEMBERS = [
    ["poison.rate=0.05", "trigger.size=2", "train.seed=0", "train.lr=0.05"],
    ["poison.rate=0.1", "trigger.size=3", "train.seed=1", "train.lr=0.02"],
    ["poison.rate=0.1", "trigger.kind=blend", "train.seed=2", "train.weight_decay=0.001"],
]


def metric_rows(run_dir: Path) -> list[dict[str, float]]:
    rows = read_metrics(run_dir / "metrics.csv")
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def final(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "summary.json").read_text())["final"]


@pytest.mark.slow
def test_stacked_runs_write_what_each_run_writes_alone(tmp_path):
    configs = [load_config(None, [*TINY, *extra]) for extra in MEMBERS]
    alone = [run_experiment(c, tmp_path / "alone" / str(i)) for i, c in enumerate(configs)]

    def member(index: int, folder: str = "stack"):
        return lambda: run_experiment(configs[index], tmp_path / folder / str(index))

    def refused():  # a member whose run ends before its training: the others still stack
        raise ValueError("refused before training")

    with pytest.raises(ValueError, match="refused before training"):
        run_stacked([member(0, "other"), member(2, "other"), refused])
    results, stacks = run_stacked([member(0), member(1), lambda: "no training"])
    assert stacks == [[0, 1]]
    assert results[2] == "no training"
    for index, solo in enumerate(alone[:2]):
        stacked = tmp_path / "stack" / str(index)
        assert results[index].run_dir == stacked
        rows, expected = metric_rows(stacked), metric_rows(solo.run_dir)
        for row, want in zip(rows, expected, strict=True):
            assert row == pytest.approx(want, rel=1e-4, abs=1e-6)
        assert final(stacked) == pytest.approx(final(solo.run_dir), rel=1e-4, abs=1e-6)
        assert not (stacked / "checkpoint.json").exists()  # a finished run removes it
        assert sorted(p.name for p in stacked.iterdir()) == sorted(
            p.name for p in solo.run_dir.iterdir()
        )
