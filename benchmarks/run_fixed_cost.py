"""A run's fixed cost: everything a run spends besides its training epochs, as a fresh process.

    python benchmarks/run_fixed_cost.py                       # this checkout, 3 rounds
    python benchmarks/run_fixed_cost.py --src /tmp/before/src --src src --json out.json

For each source tree (``--src``, repeatable: an older checkout's ``src`` beside this one gives
before and after in one invocation, rounds interleaved so both see the same machine load), it
measures in fresh processes:

* ``import_s``: ``import triggerlab.run.experiment`` alone (interpreter start included), and
  which heavy libraries that import pulls in;
* one whole run of the embedded default experiment (the digits, BadNets) with
  ``train.epochs`` 1 (``--set`` adds overrides): the process's wall time, the seconds of its
  training epochs (the optimiser steps of each epoch, from its history), and ``fixed_s``, the
  difference: start-up, loading, poisoning, evaluation, figures and writing. The run's own
  phases come from ``summary.json`` (``timings.phases``) where the tree records them;
* the heavy libraries the process had imported when the run ended;
* the same run as a user starts it, ``python -m triggerlab run -q --set ...``
  (``command_s``, and ``command_fixed_s`` without its epochs): the command line's own
  start and exit included.

Medians over the rounds are printed and, with ``--json``, written with every round's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("matplotlib", "pandas", "scipy", "skimage", "sklearn", "torchvision", "timm", "PIL")

RUN = """
import json, sys, time
start = time.perf_counter()
from triggerlab.config import load_config
from triggerlab.run.experiment import run_experiment
imported = time.perf_counter() - start
cfg = load_config(None, json.loads(sys.argv[1]))
result = run_experiment(cfg)
epochs = sum(h.get("train_time_s", 0.0) for h in result.history)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"imported_s": imported, "epochs_s": epochs, "heavy": heavy,
                  "timings": result.summary["timings"]}))
"""


def fresh_process(src: Path, args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=900
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{src}: {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return seconds, done


def measure_import(src: Path) -> dict[str, object]:
    seconds, done = fresh_process(
        src, ["-X", "importtime", "-c", "import triggerlab.run.experiment"]
    )
    modules = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()}
    return {"import_s": seconds, "import_heavy": sorted(modules & set(HEAVY))}


def measure_run(src: Path, overrides: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        settings = [*overrides, f"output.directory={folder}"]
        seconds, done = fresh_process(src, ["-c", RUN, json.dumps(settings), json.dumps(HEAVY)])
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "process_s": seconds,
        "epochs_s": found["epochs_s"],
        "fixed_s": seconds - found["epochs_s"],
        "imported_s": found["imported_s"],
        "run_heavy": found["heavy"],
        "phases": found["timings"].get("phases"),
    }


def measure_command(src: Path, overrides: list[str]) -> dict[str, object]:
    """The same run as a user starts it: ``python -m triggerlab run -q --set ...``."""
    with tempfile.TemporaryDirectory() as folder:
        sets = [a for o in [*overrides, f"output.directory={folder}"] for a in ("--set", o)]
        seconds, _ = fresh_process(src, ["-m", "triggerlab", "run", "-q", *sets])
        (summary,) = Path(folder).glob("*/summary.json")
        timings = json.loads(summary.read_text())["timings"]
    epochs = float(timings.get("epochs_s") or 0.0)
    return {"command_s": seconds, "command_fixed_s": seconds - epochs}


def median_of(rounds: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rounds)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, action="append", help="source tree (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="train.threads of the run")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sources = [p.resolve() for p in (args.src or [Path(__file__).resolve().parents[1] / "src"])]
    overrides = ["train.epochs=1", f"train.threads={args.threads}", *args.overrides]
    rounds: dict[str, list[dict[str, object]]] = {str(s): [] for s in sources}
    for _ in range(args.rounds):
        for src in sources:  # interleaved: each tree sees the same load
            found = {**measure_import(src), **measure_run(src, overrides)}
            rounds[str(src)].append({**found, **measure_command(src, overrides)})
    keys = ("import_s", "process_s", "epochs_s", "fixed_s", "command_s", "command_fixed_s")
    print(f"{'source':<40} " + " ".join(f"{k:>10}" for k in keys) + "  heavy imports by a run")
    medians = {}
    for src, measured in rounds.items():
        medians[src] = {k: median_of(measured, k) for k in keys}
        heavy = ", ".join(measured[-1]["run_heavy"]) or "none"  # type: ignore[arg-type]
        shown = " ".join(f"{medians[src][k]:>10.2f}" for k in keys)
        print(f"{src[-40:]:<40} {shown}  {heavy}")
    if len(sources) > 1:
        first, last = medians[str(sources[0])], medians[str(sources[-1])]
        for key in ("import_s", "fixed_s", "command_fixed_s"):
            print(f"{key}: last / first = {last[key] / first[key]:.2f}")
    if args.json:
        record = {
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
            "python": platform.python_version(),
            "overrides": overrides,
            "median": medians,
            "rounds": rounds,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
