"""`--executor slurm` against a real one-node Slurm cluster started by the test (slurmctld and
slurmd bound to 127.0.0.1): a grid as one job array, a job cancelled mid-run and run again
from its checkpoint, the local executor's numbers, and submitting without waiting."""

import csv
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.clusters import deadline, results_without_timings, slurm_cluster
from support.gridspecs import BASE, write_spec
from typer.testing import CliRunner

from triggerlab.cli import app
from triggerlab.errors import ArgumentError
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.runner import run_grid
from triggerlab.grid.slurm_options import SlurmOptions
from triggerlab.grid.spec import load_grid_spec

pytest.importorskip("submitit", reason="submitit is the optional extra triggerlab[slurm]")
pytestmark = pytest.mark.cluster

# Runs long enough that a job cancelled at its first checkpoint is still training when Slurm
# kills it (at least 5 s after the cancel, which the job survives), short enough for a test.
LONG = {
    **BASE,
    "data": {"name": "digits", "resize": 28},
    "model": {"name": "small_cnn", "options": {"width": 16, "hidden": 64}},
    "train": {**BASE["train"], "checkpoint_every": 4},
}
QUICK = SlurmOptions(time_min=10, poll_s=1.0)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        patch = pytest.MonkeyPatch()
        patch.setenv("SLURM_CONF", str(cluster.conf))
        try:
            yield cluster
        finally:
            patch.undo()


def jobs_of(grid_dir: Path) -> dict[str, str]:
    runs = json.loads((grid_dir / "slurm" / "jobs.json").read_text())["runs"]
    return {identity: entry["job"] for identity, entry in runs.items()}


def cancel_at_first_checkpoint(grid_dir: Path, identity: str, cancelled: list[str]) -> None:
    """scancel the run's job once the run has written its first checkpoint."""
    checkpoint = grid_dir / "runs" / identity / "checkpoint.json"
    stop = time.monotonic() + 400
    while time.monotonic() < stop:
        if checkpoint.exists():
            job = jobs_of(grid_dir)[identity]
            subprocess.run(["scancel", job], check=True, timeout=60)
            cancelled.append(job)
            return
        time.sleep(0.2)


def epoch_numbers(folder: Path) -> list[dict[str, str]]:
    """metrics.csv without its timings (seconds, images per second)."""
    with (folder / "metrics.csv").open() as handle:
        return [
            {k: v for k, v in row.items() if not k.endswith(("_s", "_per_s"))}
            for row in csv.DictReader(handle)
        ]


def assert_every_run_once_and_complete(grid_dir: Path, epochs: dict[str, int]) -> None:
    manifest = json.loads((grid_dir / "manifest.json").read_text())
    assert sorted(p.name for p in (grid_dir / "runs").iterdir()) == sorted(epochs)
    assert sorted(e["id"] for e in manifest["runs"]) == sorted(epochs)
    for identity, count in epochs.items():
        folder = grid_dir / "runs" / identity
        assert json.loads((folder / "summary.json").read_text())["status"] == "complete"
        assert not (folder / "failed.json").exists() and not list(folder.glob(".*.tmp"))
        rows = (folder / "metrics.csv").read_text().strip().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == list(range(1, count + 1))


def test_a_cancelled_job_continues_its_run_and_the_grid_has_the_local_numbers(tmp_path, slurm):
    spec = load_grid_spec(write_spec(tmp_path, base=LONG, grid={"train.epochs": [2, 48]}))
    epochs = {r.run_id: r.config.train.epochs for r in plan_grid(spec)}
    (long_run,) = [identity for identity, n in epochs.items() if n == 48]
    grid_dir = tmp_path / "slurm"
    cancelled: list[str] = []
    watcher = threading.Thread(
        target=cancel_at_first_checkpoint, args=(grid_dir, long_run, cancelled), daemon=True
    )
    watcher.start()
    with deadline(600):
        outcome = run_grid(spec, grid_dir, executor="slurm", threads=1, slurm=QUICK)
    watcher.join(timeout=5)
    assert outcome.ok and sorted(outcome.completed) == sorted(epochs), outcome.failed
    assert len(cancelled) == 1
    # the cancelled job ended without a result and its run went to a new job, once
    assert outcome.retried == {long_run: ["cancelled"]}
    assert jobs_of(grid_dir)[long_run] != cancelled[0]
    states = slurm.run("squeue", "-h", "-r", "-t", "all", "-o", "%i %T").splitlines()
    assert f"{cancelled[0]} CANCELLED" in states
    log = (grid_dir / "slurm" / f"{cancelled[0]}_0_log.err").read_text()
    assert "CANCELLED" in log
    assert_every_run_once_and_complete(grid_dir, epochs)

    local = run_grid(spec, tmp_path / "local", threads=1)
    assert local.ok
    for identity in epochs:
        here, there = tmp_path / "local" / "runs" / identity, grid_dir / "runs" / identity
        a = json.loads((here / "summary.json").read_text())["final"]
        b = json.loads((there / "summary.json").read_text())["final"]
        assert a == b
        assert epoch_numbers(here) == epoch_numbers(there)
    assert results_without_timings(grid_dir).equals(results_without_timings(tmp_path / "local"))


def test_submit_without_waiting_then_status_then_collect(tmp_path, slurm):
    runner = CliRunner()
    base = {**LONG, "train": {**LONG["train"], "epochs": 6}}
    spec_path = write_spec(tmp_path, base=base, grid={"trigger.size": [2, 3]})
    grid_dir = tmp_path / "g"
    flags = ["--executor", "slurm", "--threads-per-worker", "1", "--slurm-time", "0:10:00", "-q"]
    cluster = ["--slurm-partition", "debug", "--slurm-mem", "1", "--slurm-parallel", "1"]
    cluster += ["--slurm-option", "comment=triggerlab-test"]

    for flag, value in (("--slurm-partition", "nope"), ("--slurm-gpus", "1")):  # no GPU here
        out = ["--out", str(grid_dir), flag, value]
        refused = runner.invoke(app, ["grid", str(spec_path), *out, *flags])
        assert refused.exit_code == 2, refused.output
        assert "--executor: Slurm refuses the jobs' request: sbatch: error:" in refused.stderr
        assert not grid_dir.exists()

    with deadline(600):
        submitted = runner.invoke(
            app,
            ["grid", str(spec_path), "--out", str(grid_dir), *flags, "--no-wait", *cluster],
        )
        assert submitted.exit_code == 0, submitted.output
        assert "0 run now, 0 failed" in submitted.output
        assert "2 runs queued or running on Slurm" in submitted.output
        jobs = jobs_of(grid_dir)
        assert len(jobs) == 2 and len({j.split("_")[0] for j in jobs.values()}) == 1  # one array
        (script,) = (grid_dir / "slurm").glob("*_submission.sh")
        asked = set(script.read_text().splitlines())
        for line in ("--array=0-1%1", "--mem=1024M", "--partition=debug", "--time=10"):
            assert f"#SBATCH {line}" in asked
        assert "#SBATCH --comment=triggerlab-test" in asked

        status = runner.invoke(app, ["status", str(grid_dir)])
        assert status.exit_code == 0, status.output
        assert "2 runs:" in status.output
        assert "queued" in status.output or "running" in status.output

        with pytest.raises(ArgumentError, match="queued or running as Slurm jobs"):
            run_grid(load_grid_spec(spec_path), grid_dir, threads=1)  # not beside them

        collected = run_grid(
            load_grid_spec(spec_path), grid_dir, executor="slurm", threads=1, slurm=QUICK
        )
    assert collected.ok and len(collected.completed) + collected.skipped == 2
    assert jobs_of(grid_dir) == jobs  # attached to the queued jobs, none submitted twice
    done = runner.invoke(app, ["status", str(grid_dir)])
    assert "2 runs: 2 done" in done.output
