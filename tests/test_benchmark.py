"""The throughput benchmark runs and reports all three pipelines (numbers come from real runs)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here trains or runs a pipeline

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def test_throughput_benchmark_small_run(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--n", "1200", "--batches", "8", "--rounds", "1", "--device", "cpu", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "(a)/(b) =" in done.stdout and "(a)/(c) =" in done.stdout
    record = json.loads(out.read_text())
    assert set(record["median"]) == {"a", "b", "c"}
    assert all(v > 0 for v in record["median"].values())
    assert record["a_over_b"] == record["median"]["a"] / record["median"]["b"]


def test_trigger_benchmark_times_every_kind():
    script = SCRIPT.with_name("triggers.py")
    args = ["--batch", "20", "--size", "32", "--repeats", "1"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    from triggerlab.catalogue.triggers import TRIGGER_KINDS, trigger_examples

    for kind in TRIGGER_KINDS:
        assert f"\n{kind}" in done.stdout
    assert done.stdout.count(" ms") == len(trigger_examples())  # one row per example


def test_docs_gallery_script_draws_both_galleries(tmp_path):
    script = SCRIPT.parents[1] / "docs" / "make_trigger_gallery.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for name in ("triggers_digit.png", "triggers_face.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_transfer_benchmark_quick_run(tmp_path):
    script = SCRIPT.with_name("transfer.py")
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert "backbone forwards:" in done.stdout and "largest difference" in done.stdout
    only = subprocess.run(
        [sys.executable, str(script), "--quick", "--workers", "1", "--cache-only"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "TMPDIR": str(tmp_path)},
    )
    assert only.returncode == 0, only.stderr
    cached = json.loads(only.stdout.strip().splitlines()[-1])
    assert cached["runs"] == 1 and cached["backbone_forwards"] > 0 and cached["seconds"] > 0


def test_throughput_benchmark_cifar10_shape(tmp_path):
    """The GPU recipe's benchmark, tiny: triggerlab fp32/bf16 against the per-sample pipeline
    (compilation is left out here: it takes minutes on two cores)."""
    out = tmp_path / "cifar.json"
    args = ["--shape", "cifar10", "--n", "256", "--batches", "1", "--batch-size", "32"]
    args += ["--rounds", "1", "--device", "cpu", "--compile", "off", "--loader-workers", "0"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert set(record["median"]) == {
        "triggerlab fp32",
        "triggerlab bf16",
        "per-sample Dataset + DataLoader (0 workers), fp32",
    }
    assert all(v > 0 for v in record["median"].values())
    assert "fastest triggerlab / per-sample pipeline" in done.stdout
