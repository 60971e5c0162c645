"""Train once, defend many: grid cells that differ only in their defence share one model."""

import json

import pytest
from support.gridspecs import write_spec

import triggerlab.run.training as training
from triggerlab.analysis.results import collect
from triggerlab.config import load_config
from triggerlab.grid.plan import plan_grid, training_key
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec
from triggerlab.run.experiment import run_experiment
from triggerlab.run.shared_training import trained_files

DEFENSES = [
    {"kind": "none"},
    {"kind": "clp", "u": 2.0},
    {"kind": "spectral_signatures"},
    {"kind": "finetune", "epochs": 1},  # holds data back: the model trains without it
]


def test_training_key_ignores_the_defence_but_not_the_data_it_holds_back():
    base = load_config(None, [])
    clp = load_config(None, ["defense.kind=clp"])
    strip = load_config(None, ["defense.kind=strip", "defense.clean_fraction=0.1"])
    finetune = load_config(None, ["defense.kind=finetune", "defense.clean_fraction=0.1"])
    other_rate = load_config(None, ["poison.rate=0.2", "defense.kind=clp"])
    assert training_key(base) == training_key(clp)
    assert training_key(strip) == training_key(finetune) != training_key(base)
    assert training_key(other_rate) != training_key(clp)


@pytest.mark.slow
def test_a_defence_grid_trains_each_attack_once(tmp_path, monkeypatch):
    trainings = []
    real_train = training._train

    def counting(*args, **kwargs):
        trainings.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "_train", counting)
    spec = load_grid_spec(
        write_spec(tmp_path, grid={"defense": DEFENSES, "poison.rate": [0.1, 0.2]})
    )
    plan = plan_grid(spec)
    assert sum(run.training_key is not None for run in plan) == 6  # 3 defences x 2 rates
    assert run_grid(spec, tmp_path / "g").ok
    # per rate: one model for none, clp and spectral signatures, one for finetune's reduced set
    assert len(trainings) == 4
    assert len(trained_files(tmp_path / "g")) == 2
    table, _ = collect(tmp_path / "g")
    assert (table["status"] == "complete").all() and len(table) == 8
    for rate in (0.1, 0.2):
        shared = table[(table["poison.rate"] == rate) & (table["defense.kind"] != "finetune")]
        assert shared["asr"].nunique() == 1 and shared["clean_acc"].nunique() == 1
        metrics = {
            (tmp_path / "g" / "runs" / i / "metrics.csv").read_text() for i in shared["run_id"]
        }
        assert len(metrics) == 1  # every sharing run logs the same epochs
    # a second pass finds everything done and trains nothing
    assert run_grid(spec, tmp_path / "g").ok and len(trainings) == 4


@pytest.mark.slow
def test_a_defence_on_a_shared_model_ends_as_on_its_own(tmp_path):
    spec = load_grid_spec(write_spec(tmp_path, grid={"defense": DEFENSES[:2]}))
    assert run_grid(spec, tmp_path / "g").ok
    table, _ = collect(tmp_path / "g")
    shared = table[table["defense.kind"] == "clp"].iloc[0]
    config = tmp_path / "g" / "runs" / shared["run_id"] / "config.yaml"
    alone = run_experiment(load_config(config, [f"output.directory={tmp_path}/alone"]))
    assert alone.summary["defense"]["after"]["asr"] == pytest.approx(shared["asr_after"])
    assert (
        alone.summary["defense"]["pruned_channels"]
        == json.loads((tmp_path / "g" / "runs" / shared["run_id"] / "summary.json").read_text())[
            "defense"
        ]["pruned_channels"]
    )


def test_runs_that_train_go_first_so_parallel_workers_train_different_models(tmp_path):
    from triggerlab.grid.plan import trainers_first

    spec = load_grid_spec(
        write_spec(tmp_path, grid={"poison.rate": [0.1, 0.2], "defense": DEFENSES[:3]})
    )
    ordered = trainers_first(plan_grid(spec))
    keys = [run.training_key for run in ordered]
    assert len(set(keys[:2])) == 2  # two workers start on two different models
    assert keys[2:] == [keys[0], keys[0], keys[1], keys[1]]  # then the runs that load them
