"""The Ray executor runs a tiny grid on a local Ray instance, with the numbers of local runs."""

import json

import pytest
from gridspecs import write_spec

from triggerlab.grid import load_grid_spec, run_grid

ray = pytest.importorskip(
    "ray", reason="Ray is the optional extra triggerlab[ray]; make installs it"
)


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_executor_matches_local_execution(tmp_path, local_ray):
    spec = load_grid_spec(write_spec(tmp_path, grid={"trigger.size": [2, 3]}))
    remote = run_grid(spec, tmp_path / "ray", executor="ray", threads=1)
    assert remote.ok and len(remote.completed) == 2
    local = run_grid(spec, tmp_path / "local", threads=1)
    for identity in local.completed:
        a = json.loads((tmp_path / "ray" / "runs" / identity / "summary.json").read_text())
        b = json.loads((tmp_path / "local" / "runs" / identity / "summary.json").read_text())
        assert a["final"] == b["final"]
    again = run_grid(spec, tmp_path / "ray", executor="ray")
    assert again.skipped == 2 and not again.completed
