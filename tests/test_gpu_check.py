"""The GPU check: without CUDA it says so, runs a CPU smoke of the same code and exits 0."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke runs where CUDA is absent")
def test_without_cuda_it_says_so_and_passes_a_cpu_smoke(tmp_path):
    out = tmp_path / "check.json"
    only = ["fp32", "bf16", "runs_per_gpu", "stacked"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(out), "--only", *only],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("no CUDA device here")
    record = json.loads(out.read_text())
    assert record["cuda"] is False
    assert set(record["checks"]) == set(only)
    assert all(check["ok"] for check in record["checks"].values())
    fp32 = record["checks"]["fp32"]["figures"]
    assert fp32["device"] == "cpu" and 0 <= fp32["final"]["clean_acc"] <= 1
    assert record["checks"]["runs_per_gpu"]["figures"]["runs"] == 2
    assert set(record["skipped_on_cpu"]) == {"fp16", "compile"}
    stacked = record["checks"]["stacked"]["figures"]
    assert set(stacked) == {"1", "4"}
    assert stacked["1"]["stack_members"] == [1] and stacked["4"]["stack_members"] == [4]
    assert stacked["4"]["train_images_per_s"] > 0
