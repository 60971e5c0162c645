"""Seconds a command takes to answer, as a user types it (a fresh process): the listings, and
a bad config refused before any work.

    python benchmarks/startup.py            # median of 3 runs per command

The catalogues and the config schema are torch-free declarations, so none of these import
torch (1.9 s alone on the project's 2-core machine), torchvision, scikit-learn, matplotlib,
pandas or timm (``tests/test_cli.py`` and ``tests/test_architecture.py`` check which modules
they import).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (
    ["--help"],
    ["datasets"],
    ["models"],
    ["defenses"],
    ["triggers", "list"],
    ["run", "--set", "poison.rate=7"],  # refused: exit 2
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("triggerlab")
    print(f"{'command':<40} {'median s':>9}")
    for command in COMMANDS:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run([str(exe), *command], capture_output=True)
            assert done.returncode in (0, 2), done.stderr.decode()
            times.append(time.perf_counter() - start)
        print(f"{'triggerlab ' + ' '.join(command):<40} {statistics.median(times):>9.2f}")


if __name__ == "__main__":
    main()
