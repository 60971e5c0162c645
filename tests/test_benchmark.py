"""The throughput benchmark runs and reports all three pipelines (numbers come from real runs)."""

import json
import subprocess
import sys
from pathlib import Path

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
