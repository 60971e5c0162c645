"""`--executor ray` on two Ray nodes started as separate `ray start` processes (loopback only,
each with its own temporary folders): the worker node does not see the grid folder (an empty
folder is mounted over it in its own mount namespace), so it ships its runs back; it is
killed mid-run, and its run is retried on the head. Every run ends once, complete, on the
driver, with the local executor's numbers."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.clusters import deadline, kill_node, ray_nodes, results_without_timings
from support.gridspecs import BASE, write_spec

from triggerlab.grid.plan import plan_grid
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec

pytest.importorskip("ray", reason="Ray is the optional extra triggerlab[ray]; make installs it")
pytestmark = pytest.mark.cluster

BIGGER = {
    **BASE,
    "data": {"name": "digits", "resize": 28},
    "model": {"name": "small_cnn", "options": {"width": 16, "hidden": 64}},
    "train": {**BASE["train"], "epochs": 4},
}


def numbers(folder: Path) -> tuple[dict, list[dict[str, str]]]:
    """The run's final metrics and its per-epoch metrics without timings."""
    final = json.loads((folder / "summary.json").read_text())["final"]
    with (folder / "metrics.csv").open() as handle:
        rows = [
            {k: v for k, v in row.items() if not k.endswith(("_s", "_per_s"))}
            for row in csv.DictReader(handle)
        ]
    return final, rows


def second_staged_run_training(staging: Path, driver: subprocess.Popen) -> bool:
    """Wait until the worker trains its second run (so it has shipped one back); False if the
    grid ended first."""
    seen: set[str] = set()
    while driver.poll() is None:
        for run in staging.glob("*/runs/*"):
            seen.add(run.name)
            if len(seen) >= 2 and (run / "metrics.csv").exists():
                return True
        time.sleep(0.1)
    return False


def test_a_grid_across_two_nodes_loses_one_and_ends_complete_with_local_numbers(tmp_path):
    grids = tmp_path / "grids"  # the worker node sees an empty folder here
    grids.mkdir()
    spec_path = write_spec(grids, base=BIGGER, grid={"trigger.size": [2, 3, 4, 5, 6, 7]})
    grid_dir = grids / "ray"
    exe = Path(sys.executable).with_name("triggerlab")
    with ray_nodes(tmp_path / "ray", hidden=grids) as cluster, deadline(900):
        command = [str(exe), "grid", str(spec_path), "--out", str(grid_dir), "--executor", "ray"]
        command += ["--address", cluster.address, "--threads-per-worker", "1", "--retries", "2"]
        driver = subprocess.Popen(
            cluster.inside(*command),
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            staging = tmp_path / "ray" / "worker-tmp" / "triggerlab-grid"
            killed = second_staged_run_training(staging, driver)
            if killed:  # the worker node dies mid-run: raylet, workers, everything
                kill_node(cluster.nodes[1])
            output, _ = driver.communicate(timeout=600)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
    assert killed, f"the worker node never trained a second run:\n{output}"
    assert driver.returncode == 0, output
    assert "6 runs, 0 already finished, 6 run now, 0 failed" in output

    identities = sorted(r.run_id for r in plan_grid(load_grid_spec(spec_path)))
    assert sorted(p.name for p in (grid_dir / "runs").iterdir()) == identities  # each once
    # the run the worker was training died with it, in its staging folder, and ran again
    lost = [run.name for run in staging.glob("*/runs/*")]
    assert len(lost) == 1 and lost[0] in identities
    local = run_grid(load_grid_spec(spec_path), tmp_path / "local", threads=1)
    assert local.ok
    for identity in identities:
        folder = grid_dir / "runs" / identity
        assert json.loads((folder / "summary.json").read_text())["status"] == "complete"
        assert not (folder / "failed.json").exists()
        final, epochs = numbers(folder)
        assert [int(row["epoch"]) for row in epochs] == [1, 2, 3, 4]
        assert (final, epochs) == numbers(tmp_path / "local" / "runs" / identity)
    assert results_without_timings(grid_dir).equals(results_without_timings(tmp_path / "local"))
