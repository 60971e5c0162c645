"""One run end to end: files written, determinism, crashes, the demo's thresholds."""

import csv
import json
from importlib.metadata import version

import pytest
from safetensors.torch import load_file

from triggerlab.attack.tasks import METRIC_NAMES
from triggerlab.config import load_config
from triggerlab.run import prepare, training
from triggerlab.run.experiment import run_experiment
from triggerlab.run.rundir import TIMING_COLUMNS, metrics_columns, read_metrics

pytestmark = pytest.mark.slow  # every test here trains or runs a pipeline

METRICS_COLUMNS = metrics_columns(METRIC_NAMES)

QUICK = ["train.epochs=2", "train.device=cpu"]


def quick_config(tmp_path, *extra):
    return load_config(None, [*QUICK, f"output.directory={tmp_path}", *extra])


def test_run_directory_contents(tmp_path):
    result = run_experiment(quick_config(tmp_path, "output.save_model=true", "output.name=r1"))
    run_dir = tmp_path / "r1"
    assert result.run_dir == run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.yaml",
        "metrics.csv",
        "model.safetensors",
        "poisoned_indices.csv",
        "samples.png",
        "summary.json",
        "trigger.png",
    ]
    # the report's gallery reads this preview instead of rebuilding the run's trigger
    from PIL import Image

    with Image.open(run_dir / "trigger.png") as preview:
        assert preview.size == (112, 112)  # the 16x16 digits, 7x (nearest neighbour)
        pixels = list(preview.getdata())
    corner = pixels[-1]  # the white 3x3 patch in the bottom-right corner
    assert corner in (255, (255, 255, 255))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["poison"]["count"] == round(0.1 * summary["data"]["train_size"])
    assert summary["poison"]["rate"] == 0.1
    assert set(summary["final"]) == {"train_loss", "clean_acc", "asr", "asr_all", "robust_acc"}
    assert summary["versions"]["torch"] == version("torch")
    assert summary["timings"]["train_s"] > 0
    assert summary["seed"] == 0 and summary["device"] == "cpu"

    rows = read_metrics(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert list(rows[0]) == list(METRICS_COLUMNS)
    assert rows[-1]["asr"] == pytest.approx(summary["final"]["asr"])

    with (run_dir / "poisoned_indices.csv").open() as fh:
        poisoned = list(csv.DictReader(fh))
    assert len(poisoned) == summary["poison"]["count"]
    assert all(r["new_label"] == "0" and r["original_label"] != "0" for r in poisoned)

    reloaded = load_config(run_dir / "config.yaml")
    assert reloaded.model_dump() == result_config(result).model_dump()
    state = load_file(run_dir / "model.safetensors")
    assert set(state) == {k for k, _ in prepare.prepare(reloaded).model.state_dict().items()}
    assert (run_dir / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def result_config(result):
    return load_config(result.run_dir / "config.yaml")


def test_same_seed_gives_identical_metric_columns(tmp_path):
    a = run_experiment(quick_config(tmp_path, "output.name=a"))
    b = run_experiment(quick_config(tmp_path, "output.name=b"))
    ma, mb = read_metrics(a.run_dir / "metrics.csv"), read_metrics(b.run_dir / "metrics.csv")
    for ra, rb in zip(ma, mb, strict=True):
        for column in METRICS_COLUMNS:
            if column not in TIMING_COLUMNS:
                assert ra[column] == rb[column], column
    assert (a.run_dir / "poisoned_indices.csv").read_text() == (
        b.run_dir / "poisoned_indices.csv"
    ).read_text()
    c = run_experiment(quick_config(tmp_path, "output.name=c", "train.seed=1"))
    assert read_metrics(c.run_dir / "metrics.csv")[-1]["train_loss"] != ma[-1]["train_loss"]


def test_crash_leaves_no_summary(tmp_path, monkeypatch):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(training, "fit_or_join", broken_fit)  # the train stage's call
    with pytest.raises(RuntimeError):
        run_experiment(quick_config(tmp_path, "output.name=crashed"))
    run_dir = tmp_path / "crashed"
    assert (run_dir / "config.yaml").exists()
    assert not (run_dir / "summary.json").exists()
    assert not list(run_dir.glob(".*.tmp"))


def test_a_taken_run_name_gets_a_fresh_one_and_an_explicit_folder_is_refused(tmp_path):
    """Rerunning a config that names its run works: the old run stays as it was."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    from triggerlab.errors import ConfigError

    with pytest.warns(UserWarning, match="taken is taken; this run goes to .*taken-2"):
        result = run_experiment(quick_config(tmp_path, "output.name=taken"))
    assert result.run_dir == tmp_path / "taken-2"
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["file"]
    with pytest.raises(ConfigError, match="already exists"):
        run_experiment(quick_config(tmp_path), run_dir=tmp_path / "taken")


def test_append_and_all_to_all_runs(tmp_path):
    result = run_experiment(
        quick_config(
            tmp_path, "poison.mode=append", "poison.label_mode=all_to_all", "train.epochs=1"
        ),
    )
    poison = result.summary["poison"]
    assert poison["train_size"] == poison["clean_train_size"] + poison["count"]
    assert poison["fraction"] == pytest.approx(poison["count"] / poison["train_size"])


def test_default_demo_reaches_the_promised_accuracy(tmp_path):
    """`make demo`: digits at 16x16, 10 % poisoning: CA >= 0.95 and ASR >= 0.95."""
    result = run_experiment(load_config(None, [f"output.directory={tmp_path}"]))
    assert result.summary["final"]["clean_acc"] >= 0.95
    assert result.summary["final"]["asr"] >= 0.95
