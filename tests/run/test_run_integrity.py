"""Runs that could end "complete" with wrong numbers, or work without a bound: the frozen-feature
cache across seeds, checkpoints read back on resume, defence parameters, sizes that cannot fit,
two processes on one run, and audits of models that misbehave."""

import json

import pytest
import yaml

from triggerlab.config import load_config
from triggerlab.run.experiment import run_experiment

SMALL = [
    "train.device=cpu",
    "model.options={width: 4, hidden: 32}",
    "train.batch_size=64",
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """An empty feature cache of each test's own."""
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))


def config(tmp_path, *extra):
    return load_config(None, [*SMALL, f"output.directory={tmp_path}", *extra])


# ---- the frozen-feature cache and fresh weights ------------------------------------------------

FROZEN = ["model.freeze=classifier", "train.epochs=3"]


def test_fresh_weights_of_another_seed_get_their_own_features(tmp_path):
    """With fresh weights the frozen body depends on the seed: a second seed must not reuse
    the first seed's features (it did: clean accuracy 0.29 instead of 0.10)."""
    run_experiment(config(tmp_path, *FROZEN, "output.name=s0"))
    cached = run_experiment(config(tmp_path, *FROZEN, "train.seed=1", "output.name=s1"))
    plain = run_experiment(
        config(tmp_path, *FROZEN, "train.seed=1", "model.feature_cache=false", "output.name=p1")
    )
    assert cached.summary["feature_cache"]["used"] and cached.summary["feature_cache"]["built_here"]
    for name in ("clean_acc", "asr", "robust_acc"):
        assert cached.summary["final"][name] == pytest.approx(
            plain.summary["final"][name], abs=0.006
        ), name


def test_a_grids_repeats_with_fresh_weights_match_uncached_runs(tmp_path):
    from support.gridspecs import write_spec

    from triggerlab.grid.runner import run_grid
    from triggerlab.grid.spec import load_grid_spec

    finals = {}
    for cache in ("true", "false"):
        spec = write_spec(tmp_path, f"{cache}.yaml", grid={"poison.rate": [0.1]}, repeats=2)
        overrides = [
            "base.model.freeze=classifier",
            f"base.model.feature_cache={cache}",
            "base.train.epochs=4",
            "base.train.lr=0.01",
        ]
        outcome = run_grid(load_grid_spec(spec, overrides), tmp_path / cache, threads=1)
        assert outcome.ok
        finals[cache] = {}
        for run in (tmp_path / cache / "runs").iterdir():
            seed = yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"]
            finals[cache][seed] = json.loads((run / "summary.json").read_text())["final"]
    assert len(finals["true"]) == 2 and finals["true"].keys() == finals["false"].keys()
    for seed, final in finals["true"].items():
        assert final["clean_acc"] == pytest.approx(finals["false"][seed]["clean_acc"], abs=0.006)
        assert final["train_loss"] == pytest.approx(finals["false"][seed]["train_loss"], rel=1e-3)
