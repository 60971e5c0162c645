"""The frozen-feature cache against training through the whole frozen model, on one grid.

    python benchmarks/transfer.py                    # ~25 min on 2 CPU cores; results/transfer.json
    python benchmarks/transfer.py --quick            # one cell, 2 epochs: a smoke test
    PYTHONPATH=/tmp/before/src python benchmarks/transfer.py --cache-only   # one tree's cached grid

A reference-001-style grid on data available offline: the digits made RGB at 64x64,
EfficientNet-Lite0 with its ImageNet weights and only the final linear layer training
(``model.freeze: classifier``), trigger sizes 4/6/8 %, poisoning rates 0.5-2 %, 2 repeats,
20 epochs. It runs the grid twice in one invocation, into two folders: with
``model.feature_cache: false`` (every epoch forwards every image through the frozen body)
and with the cache (empty at the start, so its one-time build is counted). Reported: wall
time, backbone image-forwards (from every run's summary.json), their ratios, and whether
both grids found the same metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from triggerlab.analysis.results import collect
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import GridSpec

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "data": {"name": "digits", "resize": 64, "channels": 3},
    "trigger": {"kind": "patch", "color": "white", "position": "bottom_right"},
    "poison": {"target": 0},
    "model": {"name": "efficientnet_lite0", "pretrained": "imagenet", "freeze": "classifier"},
    "train": {"optimizer": "adam", "lr": 0.001, "epochs": 20, "batch_size": 128},
}


def spec(quick: bool, cache: bool) -> GridSpec:
    base = json.loads(json.dumps(BASE))
    base["model"]["feature_cache"] = cache
    grid = {"trigger.size": [0.04, 0.06, 0.08], "poison.rate": [0.005, 0.01, 0.015, 0.02]}
    if quick:
        base["train"]["epochs"] = 2
        grid = {"trigger.size": [0.08], "poison.rate": [0.02]}
    return GridSpec(
        name=f"transfer_{'cache' if cache else 'whole'}",
        base=base,
        grid=grid,
        repeats=1 if quick else 2,
    )


def measure(folder: Path, grid_spec: GridSpec, workers: int) -> dict[str, float]:
    start = time.perf_counter()
    outcome = run_grid(grid_spec, folder, workers=workers, threads=1)
    seconds = time.perf_counter() - start
    if not outcome.ok:
        raise SystemExit(f"{grid_spec.name}: {len(outcome.failed)} runs failed")
    forwards = 0
    for summary in folder.glob("runs/*/summary.json"):
        forwards += json.loads(summary.read_text())["feature_cache"]["backbone_forwards"]
    return {"seconds": seconds, "backbone_forwards": forwards, "runs": outcome.total}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--cache-only",
        action="store_true",
        help="only the grid on the feature cache (its one-time build included): what a source "
        "tree given by PYTHONPATH takes for it; prints, writes --json only when given",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="triggerlab-transfer-"))
    os.environ["TRIGGERLAB_CACHE"] = str(work / "cache")  # an empty cache: its build counts
    if args.cache_only:
        try:
            cached = measure(work / "cache_grid", spec(args.quick, cache=True), args.workers)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(cached))
        if args.json:
            args.json.write_text(json.dumps({"feature_cache": cached}, indent=2) + "\n")
        return
    args.json = args.json or ROOT / "benchmarks" / "results" / "transfer.json"
    try:
        whole = measure(work / "whole", spec(args.quick, cache=False), args.workers)
        cached = measure(work / "cache_grid", spec(args.quick, cache=True), args.workers)
        metrics = ["clean_acc", "asr"]
        order = ["trigger.size", "poison.rate", "repeat"]
        a, b = (collect(work / name)[0].sort_values(order) for name in ("whole", "cache_grid"))
        largest = float((a[metrics].to_numpy() - b[metrics].to_numpy()).__abs__().max())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {
        "grid": "digits 64x64 RGB, efficientnet_lite0 (ImageNet), freeze classifier",
        "quick": args.quick,
        "workers": args.workers,
        "whole_model": whole,
        "feature_cache": cached,
        "forwards_ratio": whole["backbone_forwards"] / cached["backbone_forwards"],
        "time_ratio": whole["seconds"] / cached["seconds"],
        "largest_metric_difference": largest,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
        },
    }
    print(pd.DataFrame({"whole model": whole, "feature cache": cached}).to_string())
    print(
        f"backbone forwards: {record['forwards_ratio']:.1f}x fewer; "
        f"wall time: {record['time_ratio']:.1f}x less; "
        f"largest difference in clean accuracy or ASR: {largest:.4f}"
    )
    if not args.quick:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
