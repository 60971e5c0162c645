"""Clean baselines train once per repeat: a run that poisons nothing trains the same model
whatever its trigger, so a grid's baselines of several trigger cells share one training, and
each still measures its own trigger."""

import copy
import csv
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from support.gridspecs import BASE, write_spec

import triggerlab.run.training as training
from triggerlab.analysis.results import collect
from triggerlab.catalogue.triggers import TRIGGER_KINDS, trigger_examples
from triggerlab.config import load_config, validate_config
from triggerlab.grid.plan import plan_grid, training_key
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec
from triggerlab.run.experiment import run_experiment
from triggerlab.run.rundir import read_metrics


def clean_config(trigger: dict, folder, name: str):
    raw = copy.deepcopy(BASE)
    raw["trigger"] = trigger
    raw["poison"] = {"rate": 0.0, "target": 0}
    raw["output"] = {"directory": str(folder), "name": name, "save_model": True}
    return validate_config(raw, name)


def test_a_clean_run_training_key_leaves_out_its_trigger_and_poisoning_only():
    patch = load_config(None, ["poison.rate=0", "trigger.size=2"])
    blend = load_config(None, ["poison.rate=0", "trigger.kind=blend", "poison.target=3"])
    by_count = load_config(None, ["poison.rate=null", "poison.count=0", "trigger.kind=frame"])
    native = load_config(None, ["poison.rate=0", "trigger.stage=native"])
    other_seed = load_config(None, ["poison.rate=0", "train.seed=1"])
    poisoned = load_config(None, ["poison.rate=0.1"])
    poisoned_blend = load_config(None, ["poison.rate=0.1", "trigger.kind=blend"])
    assert training_key(patch) == training_key(blend) == training_key(by_count)
    # the stage decides how the images are loaded; a seed, what is trained
    assert training_key(native) != training_key(patch) != training_key(other_seed)
    assert training_key(poisoned) != training_key(poisoned_blend) != training_key(patch)


@pytest.mark.slow
def test_every_trigger_kind_trains_the_same_clean_model(tmp_path):
    """What lets clean baselines share a training: with nothing poisoned, no trigger kind
    reaches the training, to the last bit of every weight."""
    first = {}
    for spec in trigger_examples().values():
        first.setdefault(spec.kind, spec)
    weights, keys = {}, {}
    for kind, spec in first.items():
        cfg = clean_config(spec.model_dump(mode="json"), tmp_path, kind)
        result = run_experiment(cfg)
        weights[kind] = load_file(result.run_dir / "model.safetensors")
        keys[kind] = training_key(cfg)
    assert set(weights) == set(TRIGGER_KINDS)  # every kind
    reference = weights.pop("patch")
    for kind, state in weights.items():
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference), kind
    assert set(keys.values()) == {keys["patch"]}


@pytest.mark.slow
def test_a_grid_trains_its_clean_baselines_once_and_each_measures_its_own_trigger(
    tmp_path, monkeypatch
):
    trainings = []
    real_train = training._train

    def counting(*args, **kwargs):
        trainings.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "_train", counting)
    base = copy.deepcopy(BASE)
    base["train"].update(epochs=2, lr=0.01)  # learns enough to tell the triggers apart
    grid = {"trigger.size": [2, 4], "trigger.color": ["white", "black"]}
    spec = load_grid_spec(write_spec(tmp_path, base=base, grid=grid, clean_baseline=True))
    plan = plan_grid(spec)
    baselines = [run for run in plan if run.role == "baseline"]
    assert len(plan) == 8 and len(baselines) == 4
    assert len({run.training_key for run in baselines}) == 1
    assert all(run.training_key is None for run in plan if run.role == "grid")
    assert run_grid(spec, tmp_path / "g", workers=1).ok
    assert len(trainings) == 5  # four poisoned cells, one clean model for the four baselines

    runs = tmp_path / "g" / "runs"
    table, _ = collect(tmp_path / "g")
    clean = table[table["role"] == "baseline"]
    assert len(clean) == 4 and clean["clean_acc"].nunique() == 1 and clean["clean_acc"].min() > 0.5
    assert clean["robust_acc"].nunique() > 1  # each baseline measured its own trigger
    trainer = 0
    for run_id in clean["run_id"]:
        summary = json.loads((runs / run_id / "summary.json").read_text())
        record = summary["shared_training"]
        trainer += record["trained_here"]
        # the same run alone (the same model: nothing poisoned) measures the same ASR
        alone = run_experiment(
            load_config(
                runs / run_id / "config.yaml",
                [f"output.directory={tmp_path}/alone", f"output.name={run_id}"],
            )
        )
        assert summary["final"] == pytest.approx(alone.summary["final"])
        with open(runs / run_id / "metrics.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 2 and rows[-1]["asr"] != "" and rows[0]["clean_acc"] != ""
        if record["trained_here"]:
            assert record["epochs_measured_with_own_trigger"] and rows[0]["asr"] != ""
        else:  # the trainer's first-epoch ASR is of another trigger: left empty (NaN read)
            assert not record["epochs_measured_with_own_trigger"] and rows[0]["asr"] == ""
            assert math.isnan(read_metrics(runs / run_id / "metrics.csv")[0]["asr"])
    assert trainer == 1
