"""A grid's run rerun alone reproduces it exactly; run ids ignore what does not change a run;
the preflight warns when two cells draw one trigger."""

import json
import warnings

import pytest
from support.gridspecs import write_spec

from triggerlab.config import load_config, validate_config
from triggerlab.grid.plan import plan_grid, preflight, run_id
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import GridSpec, load_grid_spec
from triggerlab.run.experiment import run_experiment
from triggerlab.run.rundir import read_metrics


@pytest.mark.slow
def test_rerunning_a_grid_runs_config_reproduces_it_exactly(tmp_path):
    """The grid records its thread count in each run's config.yaml, so the run alone, in a
    process with another thread count, gives the same numbers."""
    spec = write_spec(tmp_path, grid={"poison.rate": [0.1]})
    run_grid(load_grid_spec(spec, ["base.train.epochs=2"]), tmp_path / "g", threads=2)
    (run,) = (tmp_path / "g" / "runs").iterdir()
    cfg = load_config(run / "config.yaml", [f"output.directory={tmp_path / 'again'}"])
    assert cfg.train.threads == 2  # conftest runs this process with one thread
    again = run_experiment(cfg)
    assert json.loads((run / "summary.json").read_text())["threads"] == 2
    grid_rows, rerun_rows = read_metrics(run / "metrics.csv"), again.history
    for a, b in zip(grid_rows, rerun_rows, strict=True):
        for name in ("train_loss", "clean_acc", "asr", "asr_all", "robust_acc"):
            assert a[name] == b[name], name


def test_run_ids_ignore_threads_and_settings_left_at_their_defaults():
    base = validate_config({"data": {"resize": 16}})
    explicit = validate_config({"data": {"resize": 16}, "train": {"momentum": 0.9, "threads": 4}})
    assert run_id(base) == run_id(explicit)
    assert run_id(base) != run_id(validate_config({"data": {"resize": 16}, "train": {"lr": 0.01}}))
    frame = validate_config({"trigger": {"kind": "frame"}})
    lines = validate_config({"trigger": {"kind": "lines"}})
    assert run_id(frame) != run_id(lines)  # a kind tag always counts, even at defaults


def test_the_preflight_warns_when_two_cells_draw_the_same_trigger():
    triggers = [{"kind": "frame", "thickness": t} for t in (0.0112, 0.0223, 0.0893)]
    spec = GridSpec(base={"data": {"resize": 64}}, grid={"trigger": triggers})
    with pytest.warns(UserWarning, match="draw identical triggers at this resolution") as caught:
        preflight(plan_grid(spec))
    assert "0.0112" in str(caught[0].message) and "0.0893" not in str(caught[0].message)
    distinct = GridSpec(base={"data": {"resize": 64}}, grid={"trigger.size": [2, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preflight(plan_grid(distinct))
    # the same test-time blend, poisoned differently (pieces, cover samples): two experiments
    blends = [{"kind": "blend", "opacity": 0.2}, {"kind": "adaptive_blend", "opacity": 0.2}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preflight(plan_grid(GridSpec(base={"data": {"resize": 32}}, grid={"trigger": blends})))
