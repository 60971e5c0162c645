"""A run on cached features trains its head by the written-out loop, to the generic loop's
numbers: the same metrics, epoch by epoch, as before that loop existed."""

import pytest

from triggerlab.config import load_config
from triggerlab.run.experiment import run_experiment
from triggerlab.run.rundir import TIMING_COLUMNS, read_metrics
from triggerlab.train import heads

SETTINGS = [
    "model.freeze=classifier",  # the small CNN's final linear layer on cached features
    "train.epochs=3",
    "train.lr_schedule=cosine",
    "train.weight_decay=0.001",
]


def metric_rows(run_dir):
    rows = read_metrics(run_dir / "metrics.csv")
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.mark.slow
def test_a_cached_run_gives_the_generic_loops_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))
    trained = []
    written_out = heads.train_heads
    monkeypatch.setattr(
        heads, "train_heads", lambda *args: (trained.append(1), written_out(*args))[1]
    )
    fast = run_experiment(
        load_config(None, [*SETTINGS, f"output.directory={tmp_path}", "output.name=fast"])
    )
    assert fast.summary["feature_cache"]["used"] and trained == [1]
    monkeypatch.setattr(heads, "why_not_fast", lambda *_args: "the generic loop, to compare")
    generic = run_experiment(
        load_config(None, [*SETTINGS, f"output.directory={tmp_path}", "output.name=generic"])
    )
    assert trained == [1]  # the second run went through train.loop.fit
    found, expected = metric_rows(fast.run_dir), metric_rows(generic.run_dir)
    assert len(found) == len(expected) == 3
    for mine, theirs in zip(found, expected, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-6)
    assert fast.summary["final"] == pytest.approx(generic.summary["final"], rel=1e-5, abs=1e-6)
