"""A run's own low-frequency pattern (``pattern: uap``, the default, without a file): a clean
surrogate trained once, the pattern cached and shared, ids of the old random pattern kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.fft import dctn

from triggerlab.catalogue.triggers import LowFrequencySpec
from triggerlab.config import load_config
from triggerlab.errors import ConfigError
from triggerlab.grid.plan import run_id
from triggerlab.run import lf_pattern
from triggerlab.run.experiment import run_experiment
from triggerlab.run.lf_checks import RUN_COPY

TINY = ["trigger.kind=low_frequency", "train.epochs=1", "poison.target=3"]
QUICK_UAP = {"images": 20, "check_per_class": 2, "max_passes": 2}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIGGERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lf_pattern, "UAP_SETTINGS", QUICK_UAP)
    return tmp_path / "cache"


def high_frequency_share(pattern: np.ndarray) -> float:
    """Share of the pattern's AC energy on DCT frequencies in the upper half of either axis."""
    energy = dctn(pattern.astype(np.float64), axes=(0, 1), norm="ortho") ** 2
    energy[0, 0] = 0.0
    half = pattern.shape[0] // 2
    high = energy[half:].sum() + energy[:half, half:].sum()
    return float(high / energy.sum())


@pytest.mark.slow
def test_the_default_computes_the_pattern_once_and_a_second_run_reuses_it(
    tmp_path, cache, monkeypatch
):
    from triggerlab.run import experiment

    monkeypatch.setattr(experiment, "_STARTUP_COUNTED", False)  # as in a fresh process
    updates = []
    first = run_experiment(load_config(None, TINY), tmp_path / "a", progress=updates.append)
    made = first.summary["trigger_pattern"]
    assert made["source"] == "computed" and made["pattern"] == "uap"
    path = cache / lf_pattern.PATTERNS / f"{made['key']}.npy"
    assert made["path"] == str(path) and path.is_file()
    assert made["clean_model"]["seed"] == lf_pattern.SURROGATE_SEED
    assert 0.0 <= made["clean_model"]["clean_acc"] <= 1.0
    assert made["clean_model"]["trained_for_this_pattern"]
    assert made["settings"]["target"] == 3 and made["passes"] <= 2
    assert any(u.stage.startswith("surrogate") for u in updates)  # it says what it trains
    # the process's start-up is the run's, not taken by the surrogate run inside it
    assert first.summary["timings"]["startup_s"] is not None
    assert list((cache / lf_pattern.CLEAN).glob("*.safetensors"))
    assert not any((cache / "clean_runs").iterdir())  # the clean run's folder is temporary
    # another run on the same data, split, model and training (its poisoning differs)
    second = run_experiment(load_config(None, [*TINY, "poison.rate=0.05"]), tmp_path / "b")
    reused = second.summary["trigger_pattern"]
    assert reused["source"] == "reused" and reused["path"] == made["path"]
    assert reused["clean_model"] == made["clean_model"]
    a, b = np.load(tmp_path / "a" / RUN_COPY), np.load(tmp_path / "b" / RUN_COPY)
    assert np.array_equal(a, b) and np.array_equal(a, np.load(path))
    x = torch.rand(4, 1, 16, 16)
    triggered = [LowFrequencySpec(path=p).build((1, 16, 16)).apply(x) for p in (path, path)]
    assert torch.equal(*triggered)
    # BackdoorBench's normalisation: 0 to 0.2; its Gaussian filter leaves no fine detail
    assert a.dtype == np.uint8 and a.min() == 0 and a.max() == 51
    assert (triggered[0] - x).abs().max() <= 0.2 + 1e-6
    assert high_frequency_share(a / 255) < 0.01
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["trigger_pattern"]["source"] == "reused"


@pytest.mark.slow
def test_a_rebuilt_run_reads_the_pattern_kept_in_its_folder(tmp_path, cache):
    from triggerlab.run.prepare import rebuild

    run_experiment(load_config(None, [*TINY, "output.save_model=true"]), tmp_path / "a")
    for path in (cache / lf_pattern.PATTERNS).iterdir():
        path.unlink()  # the cache may go: the run keeps its copy
    ctx = rebuild(tmp_path / "a")
    assert ctx.trigger_pattern["source"] == "run folder"
    expected = np.load(tmp_path / "a" / RUN_COPY).astype(np.float32) / 255
    x = torch.zeros(1, 1, 16, 16)
    assert torch.allclose(ctx.trigger.apply(x)[0, 0], torch.from_numpy(expected[..., 0]))


def test_random_smooth_keeps_its_old_id_and_the_default_gets_a_new_one():
    old = load_config(None, ["trigger={kind: low_frequency, pattern: random_smooth, eps: 0.1}"])
    # the id the same config had when random_smooth was the default (no pattern key)
    assert run_id(old) == "d8560f0b0787"
    default = load_config(None, ["trigger={kind: low_frequency}"])
    assert run_id(default) != run_id(
        load_config(None, ["trigger={kind: low_frequency, pattern: random_smooth}"])
    )


def test_a_random_smooth_setting_with_the_default_pattern_is_refused():
    with pytest.raises(ValidationError, match="eps: applies to pattern random_smooth only"):
        LowFrequencySpec(eps=0.1)
    with pytest.raises(ValidationError, match="path: only pattern uap"):
        LowFrequencySpec(pattern="random_smooth", path="p.npy")


def test_regression_has_no_class_to_perturb_towards_and_is_refused(tmp_path, cache):
    gaze = ["data.name=synthetic_gaze", "data.resize=16", "data.options={count: 80, subjects: 4}"]
    cfg = load_config(None, [*gaze, "poison.target=[0.0, 0.3]", "trigger.kind=low_frequency"])
    with pytest.raises(ConfigError, match="trigger.pattern: uap .* regression.* random_smooth"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not cache.exists()  # nothing trained


def test_all_to_all_is_refused_before_anything_trains(tmp_path, cache):
    cfg = load_config(None, [*TINY, "poison.label_mode=all_to_all"])
    with pytest.raises(ConfigError, match="trigger.pattern: uap .* all_to_all"):
        run_experiment(cfg, tmp_path / "run")
    assert not cache.exists()


def test_checks_that_train_nothing_accept_the_default_without_a_pattern(cache):
    from triggerlab.data.prepare import load_source, split_source
    from triggerlab.run.prepare import check_run

    cfg = load_config(None, TINY)
    data = split_source(load_source(cfg.data), cfg.data, cfg.split_seed)
    checked = check_run(cfg, data, 0)  # the grid's preflight and cost estimate
    assert checked.trigger.apply(torch.zeros(1, 1, 16, 16)).abs().max() > 0
    assert not cache.exists()


def test_the_grid_preflight_plans_the_default_without_training_or_false_twins(cache):
    import warnings

    from triggerlab.grid.plan import plan_grid, preflight
    from triggerlab.grid.spec import GridSpec

    triggers = [{"kind": "low_frequency"}, {"kind": "low_frequency", "pattern": "random_smooth"}]
    spec = GridSpec(base={"data": {"resize": 16}}, grid={"trigger": triggers})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the stand-in draws random_smooth: no twin warning
        preflight(plan_grid(spec))
    assert not cache.exists()
    regression = GridSpec(
        base={
            "data": {"name": "synthetic_gaze", "resize": 16, "options": {"count": 80}},
            "poison": {"target": [0.0, 0.3]},
        },
        grid={"trigger": [{"kind": "low_frequency"}]},
    )
    with pytest.raises(ConfigError, match="in cell .*trigger.pattern: uap"):
        preflight(plan_grid(regression))


def test_the_cost_estimate_says_what_the_surrogates_add(cache):
    from triggerlab.grid.cost import grid_cost
    from triggerlab.grid.plan import plan_grid
    from triggerlab.grid.spec import GridSpec

    cells = {"poison.target": [1, 2], "trigger.pattern": ["uap", "random_smooth"]}
    spec = GridSpec(
        base={"data": {"resize": 16, "seed": 0}, "trigger": {"kind": "low_frequency"}},
        grid=cells,
        repeats=2,
    )
    notes = grid_cost(plan_grid(spec)).notes
    # 4 runs compute a pattern; one split (data.seed), so one surrogate for all of them
    assert "4 low-frequency runs compute their pattern from a clean surrogate: 1 more" in (
        " ".join(notes)
    )
    assert not cache.exists()
