"""Grids on clusters, the parts that need no cluster: options and their refusals, runs shipped
back from a node that does not share the grid folder, failure causes, and `status`.
(The real Slurm and Ray clusters: test_cluster_slurm.py, test_cluster_ray.py.)"""

import json

import pytest
from support.gridspecs import write_spec
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.errors import ArgumentError
from triggerlab.grid.execute import run_arguments
from triggerlab.grid.failures import (
    CANCELLED,
    JOB_LOST,
    NODE_LOST,
    OUT_OF_MEMORY,
    PREEMPTED,
    RUN_ERROR,
    TIME_LIMIT,
    count_by_cause,
)
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.runner import run_grid
from triggerlab.grid.shipping import SHIPPED, execute_on_node, mark_session, unpack
from triggerlab.grid.slurm_options import parse_extra, parse_time
from triggerlab.grid.slurm_queue import ended_cause
from triggerlab.grid.spec import load_grid_spec

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("1:30:00", 90), ("0:10:30", 11), ("2-00:00", 2880), ("1-12:00:00", 2160)],
)
def test_slurm_time_limits_in_slurm_forms(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", "-5", "1:2:3:4", "400-00:00"])
def test_a_bad_time_limit_is_refused(text):
    with pytest.raises(ArgumentError, match="slurm_time"):
        parse_time(text)


def test_sbatch_options_are_name_value_pairs():
    assert parse_extra(["account=proj42", "--qos=high", "constraint=a100|h100"]) == {
        "account": "proj42",
        "qos": "high",
        "constraint": "a100|h100",
    }
    for bad in ["account", "=x", "account=", "Account=x", "acc ount=x"]:
        with pytest.raises(ArgumentError, match="slurm_option"):
            parse_extra([bad])


CLI_REFUSALS = {
    "no-wait outside Slurm": (["--no-wait"], "--no-wait: only Slurm jobs outlive the command"),
    "time": (["--executor", "slurm", "--slurm-time", "2h"], "--slurm-time '2h': expected"),
    "sbatch option": (["--executor", "slurm", "--slurm-option", "account"], "--slurm-option"),
    "retries": (["--retries", "-1"], "--retries: expected 0 to 100"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CLI_REFUSALS))
def test_bad_cluster_flags_exit_2_and_write_nothing(tmp_path, case):
    flags, message = CLI_REFUSALS[case]
    spec = write_spec(tmp_path)
    result = runner.invoke(app, ["grid", str(spec), "--out", str(tmp_path / "g"), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "g").exists()


@pytest.mark.slow
def test_slurm_without_slurm_on_the_path_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch, squeue, scancel here
    spec = write_spec(tmp_path)
    flags = ["--out", str(tmp_path / "g"), "--executor", "slurm"]
    result = runner.invoke(app, ["grid", str(spec), *flags])
    assert result.exit_code == 2, result.output
    assert "needs" in result.stderr and ("sbatch" in result.stderr or "submitit" in result.stderr)
    assert not (tmp_path / "g").exists()


def test_a_node_that_does_not_see_the_grid_ships_its_run_back(tmp_path, monkeypatch):
    """A task whose node has no grid folder (or another one at the same path: a stale copy)
    runs in its node's temporary folder and returns the run folder with its outcome."""
    spec = load_grid_spec(write_spec(tmp_path, grid={"trigger.size": [3]}))
    (run,) = plan_grid(spec)
    shared, elsewhere = tmp_path / "shared", tmp_path / "elsewhere"
    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(node_tmp))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    shared.mkdir()
    token = mark_session(shared)
    in_place = execute_on_node(run_arguments(run, shared, 1), str(shared), run.run_id, token)
    assert in_place["ok"] and SHIPPED not in in_place

    elsewhere.mkdir()
    mark_session(elsewhere)  # a folder at the grid's path, but not this session's
    shipped = execute_on_node(run_arguments(run, elsewhere, 1), str(elsewhere), run.run_id, token)
    assert shipped["ok"] and shipped["final"] == in_place["final"]
    assert not (elsewhere / "runs").exists()  # nothing written where the grid seemed to be
    assert not list(node_tmp.glob("triggerlab-grid/*/runs/*"))  # the staged copy is gone
    receiving = tmp_path / "driver"
    (receiving / "runs" / run.run_id).mkdir(parents=True)
    (receiving / "runs" / run.run_id / "stale.txt").write_text("an earlier attempt")
    unpack(receiving, run.run_id, shipped[SHIPPED])
    folder = receiving / "runs" / run.run_id
    assert json.loads((folder / "summary.json").read_text())["status"] == "complete"
    assert not (folder / "stale.txt").exists() and not list(folder.parent.glob(".*"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (shared / "runs" / run.run_id).iterdir()
    )


def test_a_lost_jobs_cause_comes_from_its_state_or_its_log(tmp_path):
    log = tmp_path / "slurm" / "7_1_0_log.err"
    log.parent.mkdir()
    assert ended_cause(tmp_path, "7_1", "NODE_FAIL") == NODE_LOST
    assert ended_cause(tmp_path, "7_1", "PREEMPTED") == PREEMPTED
    assert ended_cause(tmp_path, "7_1", "TIMEOUT") == TIME_LIMIT
    assert ended_cause(tmp_path, "7_1", "OUT_OF_MEMORY") == OUT_OF_MEMORY
    assert ended_cause(tmp_path, "7_1", None) == JOB_LOST  # nothing to say why
    log.write_text("slurmstepd: error: *** JOB 9 ON n1 CANCELLED AT 2026-01-01T00:00:00 ***\n")
    assert ended_cause(tmp_path, "7_1", None) == CANCELLED
    assert ended_cause(tmp_path, "7_1", "FAILED") == CANCELLED  # killed: no result was left
    log.write_text("*** JOB 9 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO PREEMPTION ***\n")
    assert ended_cause(tmp_path, "7_1", "CANCELLED") == CANCELLED  # the state says more
    assert ended_cause(tmp_path, "7_1", None) == PREEMPTED


@pytest.mark.slow
def test_ray_exceptions_name_their_cause():
    ray = pytest.importorskip("ray", reason="Ray is the optional extra triggerlab[ray]")
    from triggerlab.grid.executors import ray_cause

    rx = ray.exceptions
    assert ray_cause(rx.WorkerCrashedError()) == NODE_LOST
    assert ray_cause(rx.NodeDiedError("node 1 died")) == NODE_LOST
    assert ray_cause(rx.LocalRayletDiedError()) == NODE_LOST
    assert ray_cause(rx.OutOfMemoryError("killed")) == OUT_OF_MEMORY
    assert ray_cause(rx.TaskCancelledError()) == CANCELLED
    assert ray_cause(rx.RayTaskError("f", "tb", ValueError("bad"))) == RUN_ERROR


@pytest.mark.slow
def test_failures_are_counted_by_cause_and_status_says_where_each_run_stands(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, grid={"trigger.size": [2, 3, 4]})
    import triggerlab.run.experiment as experiment

    real = experiment.run_experiment

    def sometimes(cfg, *args, **kwargs):
        if cfg.trigger.size != 2:
            raise RuntimeError("disk full")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(experiment, "run_experiment", sometimes)
    grid_dir = tmp_path / "g"
    result = runner.invoke(app, ["grid", str(spec), "--out", str(grid_dir), "-q"])
    assert result.exit_code == 1, result.output
    assert "failed by cause: 2 run error" in result.output
    assert "(run error): RuntimeError: disk full" in result.stderr
    assert count_by_cause({"a": NODE_LOST, "b": RUN_ERROR, "c": NODE_LOST}) == (
        "1 run error, 2 node lost"
    )

    ids = {r.cell["trigger.size"]: r.run_id for r in plan_grid(load_grid_spec(spec))}
    (grid_dir / "runs" / ids[4] / "failed.json").unlink()  # started, not running, not failed
    status = runner.invoke(app, ["status", str(grid_dir)])
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert f"{ids[2]}  done" in lines and f"{ids[3]}  failed" in lines
    assert f"{ids[4]}  unfinished" in lines
    assert "run error: RuntimeError: disk full" in status.output
    assert lines[-1] == "3 runs: 1 done, 1 failed, 1 unfinished"
    outcome = run_grid(load_grid_spec(spec), grid_dir, threads=1)  # a local grid resumes
    assert outcome.skipped == 1 and len(outcome.failed) == 2


def test_status_of_a_folder_that_is_not_a_grid(tmp_path):
    result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "is not a grid directory" in result.stderr
