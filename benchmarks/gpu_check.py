"""Every CUDA path of triggerlab, once, in a few minutes, with one JSON of figures.

    python benchmarks/gpu_check.py                      # writes gpu_check.json
    python benchmarks/gpu_check.py --json out.json --epochs 3

On a CUDA machine it runs, each on the digits (bundled: nothing to download) resized to
32x32 RGB, a CIFAR-shaped input (16x16 on the CPU smoke):

* ``fp32``, ``bf16``, ``fp16`` (autocast; fp16 with its gradient scaler): one run each of
  the small CNN, with clean accuracy, ASR and images/s;
* ``compile``: the same run with ``train.compile`` (the compile time is in its seconds);
* ``augment``: PreAct-ResNet-18 with random crop and flip applied on the device;
* ``runs_per_gpu``: a grid of four runs sharing the GPU (``gpus_per_run`` 0.25);
* ``throughput_cifar``: ``benchmarks/throughput.py --shape cifar10`` at a reduced size
  (fp32 and bf16, compile off and on);
* ``stacked``: K = 1 to 256 runs trained as one stack (``triggerlab grid --stack K``):
  seconds, the members' training images/s together, and the stack sizes they recorded.

Each check is timed and recorded on its own: one that fails is written with its error and
the others still run; the exit status is 1 when any failed. Without CUDA it says so, runs a
tiny CPU smoke of the same code (fp32 and bf16 runs, augmentation, two runs of a grid, the
throughput benchmark's CIFAR path, each as small as it goes; fp16 and compile are skipped,
with the reason) and exits 0 when the smoke passes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
BUDGET_S = 300.0  # the whole check on a GPU: under five minutes
STACK_SIZES = (1, 4, 16, 64, 256)


def base_config(device: str, epochs: int, model: str = "small_cnn") -> dict[str, Any]:
    side = 32 if device == "cuda" else 16  # CIFAR-shaped on the GPU; the CPU smoke, smaller
    return {
        "data": {"name": "digits", "resize": side, "channels": 3},
        "trigger": {"kind": "patch", "size": 3},
        "poison": {"rate": 0.1, "target": 0},
        "model": {"name": model},
        "train": {"epochs": epochs, "batch_size": 128, "device": device},
    }


def one_run(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One experiment; its final metrics, throughput and phases."""
    from triggerlab.config import validate_config
    from triggerlab.run.experiment import run_experiment

    cfg = validate_config({**raw, "output": {"directory": str(folder)}}, "the check")
    summary = run_experiment(cfg).summary
    timings = summary["timings"]
    return {
        "final": {k: summary["final"][k] for k in ("clean_acc", "asr") if k in summary["final"]},
        "train_images_per_s": timings["train_images_per_s"],
        "total_s": timings["total_s"],
        "epochs_s": timings.get("epochs_s"),
        "device": summary.get("device"),
    }


def with_train(raw: dict[str, Any], **train: Any) -> dict[str, Any]:
    return {**raw, "train": {**raw["train"], **train}}


def grid_check(raw: dict[str, Any], folder: Path, runs: int, gpus_per_run: float | None) -> dict:
    """``runs`` runs of one grid side by side (sharing the GPU when ``gpus_per_run``)."""
    from triggerlab.grid.runner import run_grid
    from triggerlab.grid.spec import GridSpec

    rates = [0.05, 0.1, 0.15, 0.2][:runs]
    spec = GridSpec(base=raw, grid={"poison.rate": rates}, repeats=1, name="gpu_check")
    workers = None if gpus_per_run is not None else 1
    outcome = run_grid(spec, folder / "grid", workers=workers, gpus_per_run=gpus_per_run)
    if not outcome.ok:
        raise RuntimeError(f"grid runs failed: {outcome.failed}")
    return {"runs": len(outcome.completed), "seconds": outcome.seconds}


def throughput_check(device: str, smoke: bool, folder: Path) -> dict[str, Any]:
    """The CIFAR-shaped throughput benchmark, reduced to fit the check."""
    out = folder / "throughput.json"
    if smoke:
        sizes = ["--n", "256", "--batches", "2", "--batch-size", "32", "--loader-workers", "0"]
        modes = ["--precisions", "fp32", "--compile", "off"]
    else:
        sizes = ["--n", "12800", "--batches", "50"]
        modes = ["--precisions", "fp32", "bf16", "--compile", "off", "on"]
    args = [*sizes, *modes, "--rounds", "1", "--device", device, "--json", str(out)]
    command = [sys.executable, str(HERE / "throughput.py"), "--shape", "cifar10", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(out.read_text())


def stacked_check(raw: dict[str, Any], folder: Path, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Stacked training at each K: a grid of K repeats of one run, trained as one stack
    (``--stack K``), one worker. Per K: the grid's seconds, the members' training images/s
    together (each member's ``train_images_per_s`` counts its own images over the stack's
    time), and the stack sizes the runs recorded."""
    from triggerlab.grid.runner import run_grid
    from triggerlab.grid.spec import GridSpec

    found = {}
    for k in sizes:
        spec = GridSpec(base=raw, grid={}, repeats=k, name=f"stack{k}")
        start = time.perf_counter()
        outcome = run_grid(spec, folder / f"stack{k}", workers=1, stack=k)
        seconds = time.perf_counter() - start
        if not outcome.ok:
            raise RuntimeError(f"stack of {k}: runs failed: {outcome.failed}")
        summaries = [
            json.loads(p.read_text())
            for p in sorted((folder / f"stack{k}" / "runs").glob("*/summary.json"))
        ]
        members = sorted({(s.get("stack") or {}).get("members", 1) for s in summaries})
        found[str(k)] = {
            "seconds": seconds,
            "train_images_per_s": sum(s["timings"]["train_images_per_s"] for s in summaries),
            "stack_members": members,
        }
    return found


def checks(device: str, smoke: bool, epochs: int, folder: Path) -> dict[str, Callable[[], Any]]:
    """The checks to run, by name: every CUDA path, or the CPU smoke's subset."""
    raw = base_config(device, epochs)
    resnet = base_config(device, epochs, "preact_resnet18")
    augmented = with_train(resnet, augment=["random_crop", "hflip"])
    if smoke:  # the smallest model and one grid run at a time: a smoke, not a measurement
        augmented = with_train(raw, augment=["random_crop", "hflip"])
    found: dict[str, Callable[[], Any]] = {
        "fp32": lambda: one_run(raw, folder / "fp32"),
        "bf16": lambda: one_run(with_train(raw, precision="bf16"), folder / "bf16"),
        "fp16": lambda: one_run(with_train(raw, precision="fp16"), folder / "fp16"),
        "compile": lambda: one_run(with_train(raw, compile=True), folder / "compile"),
        "augment": lambda: one_run(augmented, folder / "augment"),
        "runs_per_gpu": lambda: grid_check(raw, folder, 2 if smoke else 4, None if smoke else 0.25),
        "throughput_cifar": lambda: throughput_check(device, smoke, folder),
        "stacked": lambda: stacked_check(raw, folder, (1, 4) if smoke else STACK_SIZES),
    }
    if smoke:
        for name in ("fp16", "compile"):
            del found[name]
    return found


SKIPPED_ON_CPU = {
    "fp16": "fp16 autocast with a gradient scaler needs CUDA",
    "compile": "compiling takes minutes on a small CPU; the GPU check compiles",
}


def machine(cuda: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        record.update(
            {
                "gpu": props.name,
                "gpus": torch.cuda.device_count(),
                "gpu_memory_gb": round(props.total_memory / 1024**3, 1),
                "capability": f"{props.major}.{props.minor}",
                "cuda": torch.version.cuda,
            }
        )
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each run (GPU)")
    parser.add_argument("--only", nargs="+", help="run these checks only")
    args = parser.parse_args()
    known = list(checks("cuda", False, args.epochs, Path(".")))
    unknown = sorted(set(args.only or []) - set(known))
    if unknown:
        parser.error(f"--only: unknown check(s) {', '.join(unknown)}; expected {', '.join(known)}")
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA device here: running a tiny CPU smoke of the same code paths instead")
    device, epochs = ("cuda", args.epochs) if cuda else ("cpu", 1)
    record: dict[str, Any] = {"cuda": cuda, "machine": machine(cuda), "checks": {}}
    failed = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        todo = checks(device, not cuda, epochs, Path(folder))
        for name, check in todo.items():
            if args.only and name not in args.only:
                continue
            began = time.perf_counter()
            try:
                figures = check()
                entry = {"ok": True, "seconds": time.perf_counter() - began, "figures": figures}
            except Exception as exc:  # recorded, and the other checks still run
                failed.append(name)
                entry = {
                    "ok": False,
                    "seconds": time.perf_counter() - began,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            record["checks"][name] = entry
            print(f"{name:<18} {'ok' if entry['ok'] else 'FAILED':<7} {entry['seconds']:7.1f} s")
    if not cuda:
        record["skipped_on_cpu"] = SKIPPED_ON_CPU
    record["seconds"] = time.perf_counter() - start
    record["within_budget"] = record["seconds"] <= BUDGET_S
    args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"{record['seconds']:.1f} s in all; wrote {args.json}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
