"""Grid expansion, run identity, resume (also after SIGKILL), failures and bad specs."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.gridspecs import BASE, write_spec
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.config import validate_config
from triggerlab.errors import ConfigError
from triggerlab.grid.plan import plan_grid, repeat_seeds, run_id
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import GridSpec, load_grid_spec

runner = CliRunner()


def spec_of(**fields) -> GridSpec:
    return GridSpec.model_validate({"base": BASE, **fields})


def test_product_zip_and_repeats():
    spec = spec_of(
        grid={"poison.rate": [0.05, 0.1, 0.2], "trigger.color": ["white", "red"]},
        zip=[{"trigger.size": [2, 4], "trigger.position": ["bottom_right", "center"]}],
        repeats=3,
    )
    cells = list(spec.cells())
    assert len(cells) == 3 * 2 * 2
    assert {(c["trigger.size"], c["trigger.position"]) for c in cells} == {
        (2, "bottom_right"),
        (4, "center"),
    }
    plan = plan_grid(spec)
    assert len(plan) == 12 * 3
    assert len({r.run_id for r in plan}) == 36
    seeds = repeat_seeds(0, 3)
    assert {r.config.train.seed for r in plan} == set(seeds)
    assert all(r.config.poison.rate == r.cell["poison.rate"] for r in plan)


@pytest.mark.slow
def test_clean_baselines_are_added_once_per_cell_and_repeat():
    spec = spec_of(
        grid={"poison.rate": [0.05, 0.1], "trigger.size": [2, 3]}, repeats=2, clean_baseline=True
    )
    plan = plan_grid(spec)
    grid_runs = [r for r in plan if r.role == "grid"]
    baselines = [r for r in plan if r.role == "baseline"]
    # the baseline of a cell does not depend on its rate: one per (size, repeat)
    assert len(grid_runs) == 8 and len(baselines) == 4
    assert all(b.config.poison.rate == 0.0 for b in baselines)
    ids = {b.run_id for b in baselines}
    assert all(r.baseline_id in ids for r in grid_runs)
    for run in grid_runs:
        base = next(b for b in baselines if b.run_id == run.baseline_id)
        assert base.config.train.seed == run.config.train.seed
        assert base.config.trigger == run.config.trigger


@pytest.mark.slow
def test_rate_zero_cell_is_its_own_baseline():
    plan = plan_grid(spec_of(grid={"poison.rate": [0.0, 0.1]}, clean_baseline=True))
    assert len(plan) == 2
    zero = next(r for r in plan if r.cell["poison.rate"] == 0.0)
    assert zero.role == "grid" and zero.baseline_id == zero.run_id


@pytest.mark.slow
def test_run_id_ignores_paths_and_key_order_and_is_stable_across_processes(tmp_path):
    a = validate_config({**BASE, "output": {"directory": "x"}})
    shuffled = {k: BASE[k] for k in reversed(list(BASE))}
    b = validate_config({**shuffled, "output": {"directory": "elsewhere", "name": "n"}})
    assert run_id(a) == run_id(b)
    assert run_id(a) != run_id(validate_config({**BASE, "train": {**BASE["train"], "epochs": 2}}))
    code = (
        "import json, sys; from triggerlab.config import validate_config; "
        "from triggerlab.grid.plan import run_id; "
        "print(run_id(validate_config(json.loads(sys.argv[1]))))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, json.dumps(shuffled)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert other.stdout.strip() == run_id(a)


def test_spec_key_order_does_not_change_ids(tmp_path):
    one = write_spec(
        tmp_path, "one.yaml", grid={"poison.rate": [0.05, 0.1], "trigger.size": [2, 3]}
    )
    two = write_spec(
        tmp_path, "two.yaml", grid={"trigger.size": [3, 2], "poison.rate": [0.1, 0.05]}
    )
    ids = [sorted(r.run_id for r in plan_grid(load_grid_spec(p))) for p in (one, two)]
    assert ids[0] == ids[1]


@pytest.mark.slow
def test_run_resume_and_force(tmp_path):
    spec = load_grid_spec(write_spec(tmp_path))
    grid_dir = tmp_path / "grid"
    first = run_grid(spec, grid_dir)
    assert first.ok and first.total == 4 and len(first.completed) == 4 and first.skipped == 0
    manifest = json.loads((grid_dir / "manifest.json").read_text())
    assert sorted(e["id"] for e in manifest["runs"]) == sorted(
        p.name for p in (grid_dir / "runs").iterdir()
    )
    again = run_grid(spec, grid_dir)
    assert again.skipped == 4 and not again.completed
    # a run without summary.json restarts clean
    victim = grid_dir / "runs" / manifest["runs"][0]["id"]
    (victim / "summary.json").unlink()
    (victim / "stale.txt").write_text("left over")
    resumed = run_grid(spec, grid_dir)
    assert resumed.completed == [victim.name] and not (victim / "stale.txt").exists()
    forced = run_grid(spec, grid_dir, force=True)
    assert len(forced.completed) == 4


@pytest.mark.slow
def test_parallel_workers_give_the_serial_numbers(tmp_path):
    spec = load_grid_spec(write_spec(tmp_path, grid={"trigger.size": [2, 3]}))
    # numbers depend on threads at the last digits, and so on stacks (which workers cut apart)
    run_grid(spec, tmp_path / "serial", threads=1, stack=1)
    run_grid(spec, tmp_path / "parallel", workers=2, threads=1, stack=1)
    for run in (tmp_path / "serial" / "runs").iterdir():
        a = json.loads((run / "summary.json").read_text())["final"]
        b = json.loads((tmp_path / "parallel" / "runs" / run.name / "summary.json").read_text())[
            "final"
        ]
        assert a == b


@pytest.mark.slow
def test_failed_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    spec = load_grid_spec(write_spec(tmp_path, grid={"trigger.size": [2, 3]}))
    import triggerlab.run.experiment as experiment

    real = experiment.run_experiment

    def sometimes(cfg, *args, **kwargs):
        if cfg.trigger.size == 3:
            raise RuntimeError("simulated out of memory")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(experiment, "run_experiment", sometimes)
    outcome = run_grid(spec, tmp_path / "g")
    assert len(outcome.completed) == 1 and len(outcome.failed) == 1
    (failed_id,) = outcome.failed
    record = json.loads((tmp_path / "g" / "runs" / failed_id / "failed.json").read_text())
    assert record["error"] == "RuntimeError" and "simulated out of memory" in record["traceback"]


@pytest.mark.slow
def test_cli_exit_status_says_whether_all_runs_succeeded(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, grid={"trigger.size": [2, 3]})
    ok = runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "ok"), "-q"])
    assert ok.exit_code == 0, ok.output
    assert "2 runs, 0 already finished, 2 run now, 0 failed" in ok.output

    import triggerlab.run.experiment as experiment

    def broken(cfg, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(experiment, "run_experiment", broken)
    bad = runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "bad"), "-q"])
    assert bad.exit_code == 1
    assert "2 failed" in bad.output and "RuntimeError: disk full" in bad.stderr


@pytest.mark.slow
def test_second_process_on_the_same_grid_is_refused(tmp_path):
    import fcntl

    spec = load_grid_spec(write_spec(tmp_path))
    grid_dir = tmp_path / "g"
    grid_dir.mkdir()
    with (grid_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="being run by another"):
            run_grid(spec, grid_dir)


BAD_SPECS = {
    "unknown key": (
        {"grid": {"poison.rat": [0.1]}},
        "grid key 'poison.rat' is not an experiment setting",
    ),
    "unknown section": (
        {"grid": {"optim.lr": [0.1]}},
        "grid key 'optim.lr' is not an experiment setting",
    ),
    "empty list": (
        {"grid": {"poison.rate": []}},
        "grid key 'poison.rate' has an empty list of values",
    ),
    "bad value in a cell": (
        {"grid": {"poison.rate": [0.1, 1.5], "trigger.size": [2]}},
        "in cell poison.rate=1.5, trigger.size=2",
    ),
    "zip lengths": (
        {"zip": [{"trigger.size": [2, 3], "poison.rate": [0.1]}]},
        "lists must have one length",
    ),
    "seed varied": ({"grid": {"train.seed": [1, 2]}}, "vary seeds with repeats and seed"),
    "unknown spec key": ({"grids": {}}, "grids: unknown key"),
    "trigger too large in a cell": (
        {"grid": {"trigger.size": [3, 20]}},
        "in cell trigger.size=20: trigger.size: a 20-pixel trigger does not fit a 16x16 image",
    ),
    "model too large in a cell": (
        {
            "grid": {"model.name": ["small_cnn", "alexnet"]},
            "base": {**BASE, "model": {"name": "small_cnn"}},
        },
        "in cell model.name='alexnet': model.name: 'alexnet' cannot take 1x16x16",
    ),
    "target outside classes": (
        {"grid": {"poison.target": [0, 12]}},
        "in cell poison.target=12: poison.target",
    ),
    "class-only defence on regression": (
        {
            "base": {
                **BASE,
                "data": {
                    "name": "synthetic_gaze",
                    "resize": 16,
                    "options": {"count": 40, "subjects": 4},
                },
                "poison": {"target": [0.0, 0.0]},
            },
            "grid": {"defense.kind": ["finetune", "strip"]},
        },
        "in cell defense.kind='strip': defense.kind: strip needs classes",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_specs_exit_2_before_any_run(tmp_path, case):
    fields, message = BAD_SPECS[case]
    spec = write_spec(tmp_path, **fields)
    result = runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "g")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "g" / "runs").exists()


@pytest.mark.parametrize("command", ["results", "plot", "report"])
def test_a_directory_that_is_not_a_grid(tmp_path, command):
    result = runner.invoke(app, [command, str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a grid directory" in result.stderr


@pytest.mark.slow
def test_base_path_is_relative_to_the_spec_and_set_reaches_it(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"trigger.size": [2]}}))
    spec = load_grid_spec(spec_path, ["base.train.epochs=3", "repeats=2"])
    assert spec.base["train"]["epochs"] == 3 and spec.repeats == 2 and spec.name == "spec"


def test_a_dotted_grid_axis_is_overridden_with_everything_after_grid(tmp_path):
    spec_path = write_spec(tmp_path, grid={"trigger.size": [2, 3], "poison.rate": [0.1]})
    spec = load_grid_spec(spec_path, ["grid.trigger.size=[2, 4]", "grid.trigger.color=[red]"])
    assert spec.grid == {"trigger.size": [2, 4], "poison.rate": [0.1], "trigger.color": ["red"]}
    with pytest.raises(ConfigError, match="grid key 'poison.raet' is not an experiment setting"):
        load_grid_spec(spec_path, ["grid.poison.raet=[0.2]"])


def _grid_process(spec: Path, grid_dir: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("triggerlab")
    return subprocess.Popen(
        [str(exe), "grid", str(spec), "--out", str(grid_dir), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_leaves_every_run_once(tmp_path):
    spec = write_spec(
        tmp_path,
        grid={"poison.rate": [0.05, 0.1], "trigger.size": [2, 3, 4]},
        clean_baseline=True,
        base={**BASE, "train": {**BASE["train"], "epochs": 2}},
    )
    grid_dir = tmp_path / "g"
    rng = random.Random(7)
    for _ in range(4):
        process = _grid_process(spec, grid_dir)
        time.sleep(rng.uniform(1.5, 5.0))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    final = _grid_process(spec, grid_dir)
    assert final.wait(timeout=300) == 0
    manifest = json.loads((grid_dir / "manifest.json").read_text())
    expected = sorted(e["id"] for e in manifest["runs"])
    assert len(expected) == 9  # 6 cells + 3 baselines
    assert sorted(p.name for p in (grid_dir / "runs").iterdir()) == expected
    for identity in expected:
        folder = grid_dir / "runs" / identity
        assert json.loads((folder / "summary.json").read_text())["status"] == "complete"
        assert not list(folder.glob(".*.tmp")) and not (folder / "failed.json").exists()
        rows = (folder / "metrics.csv").read_text().strip().splitlines()
        assert len(rows) == 3  # header + one row per epoch, never duplicated


@pytest.mark.slow
def test_a_regression_grid_runs_and_reports(tmp_path):
    base = {
        "data": {"name": "synthetic_gaze", "resize": 16, "options": {"count": 60, "subjects": 4}},
        "poison": {"target": [0.0, 0.3]},
        "model": {"name": "small_cnn", "options": {"width": 4, "hidden": 16}},
        "train": {"epochs": 1, "device": "cpu"},
    }
    spec = write_spec(tmp_path, base=base, grid={"trigger.size": [2, 3]}, clean_baseline=True)
    lines: list[str] = []
    outcome = run_grid(
        load_grid_spec(spec), tmp_path / "g", progress=lambda u: u.note and lines.append(u.note)
    )
    assert outcome.ok and len(outcome.completed) == 4
    assert "clean_error" in lines[0] and "attack_error" in lines[0]
    from triggerlab.analysis.results import collect, summarize

    table, varied = collect(tmp_path / "g")
    grid_rows, baselines = table[table["role"] == "grid"], table[table["role"] == "baseline"]
    assert grid_rows["clean_error_increase"].notna().all() and len(grid_rows) == 2
    assert (baselines["clean_error_increase"] == 0).all()  # a baseline is paired with itself
    assert "attack_error_mean" in summarize(table, varied)


def test_lines_count_keeps_the_ids_it_had_when_10_was_the_default():
    """The lines' default count fell from 10 to 8 (8 fit the 16 px digits): a run or a
    composition part that sets 10 keeps its id; 8, new, is named in it."""
    from triggerlab.grid.plan import non_default

    lines = validate_config({**BASE, "trigger": {"kind": "lines", "count": 10}})
    assert non_default(lines)["trigger"] == {"kind": "lines"}
    eight = validate_config({**BASE, "trigger": {"kind": "lines"}})
    assert eight.trigger.count == 8 and non_default(eight)["trigger"]["count"] == 8
    parts = {"kind": "compose", "triggers": [{"kind": "frame"}, {"kind": "lines", "count": 10}]}
    composed = validate_config({**BASE, "trigger": parts})
    assert non_default(composed)["trigger"]["triggers"][1] == {"kind": "lines"}
