"""Time to apply each trigger kind to a batch of 1,000 RGB images of 64x64.

    python benchmarks/triggers.py                  # CPU, the default example of every kind
    python benchmarks/triggers.py --batch 256 --size 224 --device cuda

Reports the median over repeats of one ``apply`` call on float images in [0, 1]
(the trigger built beforehand, as in a run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from triggerlab.catalogue.triggers import trigger_examples
from triggerlab.train.devices import resolve_device, synchronize


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    device = resolve_device(args.device)
    x = torch.rand(
        args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)
    ).to(device)
    print(
        f"{args.batch} images of 3x{args.size}x{args.size} on {device}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, spec in trigger_examples().items():  # every kind's examples (catalogue)
        trigger = spec.build((3, args.size, args.size))
        generator = torch.Generator().manual_seed(0)
        trigger.apply(x, generator)  # warm-up
        times = []
        for _ in range(args.repeats):
            synchronize(device)
            start = time.perf_counter()
            trigger.apply(x, generator)
            synchronize(device)
            times.append(time.perf_counter() - start)
        print(f"{name:26s} {1000 * statistics.median(times):8.1f} ms")


if __name__ == "__main__":
    main()
