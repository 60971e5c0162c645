"""Seconds each listing command takes to answer, as a user types it (a fresh process).

    python benchmarks/listing.py            # median of 3 runs per command

The listings must answer in under 2 s on the project's 2-core machine: they read
``triggerlab/listings.json`` and import neither torch (1.9 s alone) nor torchvision,
scikit-learn, matplotlib, pandas or timm (``tests/test_cli.py`` checks which modules
a listing imports, and that the saved listings are current).
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
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("triggerlab")
    print(f"{'command':<26} {'median s':>9}")
    for command in COMMANDS:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([str(exe), *command], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        print(f"{'triggerlab ' + ' '.join(command):<26} {statistics.median(times):>9.2f}")


if __name__ == "__main__":
    main()
