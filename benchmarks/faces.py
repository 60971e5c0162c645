"""Rendering speed of the procedural faces (synthetic_gaze / synthetic_headpose).

python benchmarks/faces.py                     # 10,000 faces of 64x64 on one thread
python benchmarks/faces.py --count 2000 --resolution 128 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from triggerlab.data.synthetic import synthetic_faces


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = synthetic_faces("gaze", count=args.count, resolution=args.resolution)
    elapsed = time.perf_counter() - start
    print(
        f"{len(data)} faces of {args.resolution}x{args.resolution} in {elapsed:.1f} s on "
        f"{args.threads} thread(s): {len(data) / elapsed:.0f} faces/s"
    )


if __name__ == "__main__":
    main()
