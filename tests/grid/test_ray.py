"""The Ray executor runs a tiny grid on a local Ray instance, with the numbers of local runs."""

import json

import pytest
from support.gridspecs import write_spec

from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec

pytestmark = pytest.mark.slow  # every test here trains or runs a pipeline

ray = pytest.importorskip(
    "ray", reason="Ray is the optional extra triggerlab[ray]; make installs it"
)


def start_ray(gpus: int) -> None:
    """A local Ray instance; a declared GPU is only counted (this machine need not have one)."""
    ray.init(
        num_cpus=2,
        num_gpus=gpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )


@pytest.fixture
def local_ray():
    start_ray(0)
    yield
    ray.shutdown()


@pytest.fixture
def ray_with_a_gpu():
    start_ray(1)
    yield
    ray.shutdown()


def test_ray_executor_matches_local_execution(tmp_path, ray_with_a_gpu, monkeypatch):
    spec = load_grid_spec(write_spec(tmp_path, grid={"trigger.size": [2, 3]}))
    remote = run_grid(spec, tmp_path / "ray", executor="ray", threads=1)
    assert remote.ok and len(remote.completed) == 2
    # each run alone, as on Ray: a stack (the local default) equals it to float rounding only
    local = run_grid(spec, tmp_path / "local", threads=1, stack=1)
    for identity in local.completed:
        a = json.loads((tmp_path / "ray" / "runs" / identity / "summary.json").read_text())
        b = json.loads((tmp_path / "local" / "runs" / identity / "summary.json").read_text())
        assert a["final"] == b["final"]
    again = run_grid(spec, tmp_path / "ray", executor="ray")
    assert again.skipped == 2 and not again.completed

    asked = []  # with --gpus-per-run, each task asks Ray for that fraction of a GPU
    remote = ray.remote

    def spying_remote(function):
        task = remote(function)

        class Spy:
            def options(self, **kwargs):
                asked.append(kwargs["num_gpus"])
                return task.options(**kwargs)

        return Spy()

    monkeypatch.setattr(ray, "remote", spying_remote)
    shared = load_grid_spec(
        write_spec(tmp_path, grid={"trigger.size": [4]}), ["base.train.device=auto"]
    )
    outcome = run_grid(shared, tmp_path / "shared", executor="ray", threads=1, gpus_per_run=0.5)
    assert outcome.ok and len(outcome.completed) == 1
    assert asked == [0.5]


def test_ray_refuses_to_share_gpus_a_cluster_does_not_have(tmp_path, local_ray):
    from triggerlab.errors import ArgumentError

    spec = load_grid_spec(write_spec(tmp_path), ["base.train.device=auto"])
    with pytest.raises(ArgumentError, match="the Ray cluster has no GPU to share"):
        run_grid(spec, tmp_path / "g", executor="ray", gpus_per_run=0.25)
    assert not (tmp_path / "g").exists()  # refused before anything was written


def test_an_address_with_no_cluster_behind_it_exits_2_and_says_how_to_start_one(tmp_path):
    from typer.testing import CliRunner

    from triggerlab.cli import app

    spec = write_spec(tmp_path, grid={"poison.rate": [0.1]})
    out = tmp_path / "grid"
    result = CliRunner().invoke(
        app, ["grid", str(spec), "--out", str(out), "--executor", "ray", "--address", "auto", "-q"]
    )
    assert result.exit_code == 2, result.output
    assert "--address: cannot connect to a Ray cluster at 'auto'" in result.output
    assert "ray start --head" in result.output and "Traceback" not in result.output
    assert not ray.is_initialized()
