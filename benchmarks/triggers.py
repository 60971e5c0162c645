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
from pydantic import TypeAdapter

from triggerlab.catalogue.triggers import TriggerSpec
from triggerlab.train.devices import resolve_device, synchronize

EXAMPLES: dict[str, dict] = {
    "patch": {"kind": "patch", "size": 0.1},
    "image (flower)": {"kind": "image", "size": 0.3},
    "frame": {"kind": "frame", "thickness": 0.05},
    "lines": {"kind": "lines", "count": 10},
    "blend (noise)": {"kind": "blend", "opacity": 0.2},
    "signal (sine)": {"kind": "signal", "shape": "sine", "delta": 0.05},
    "random": {"kind": "random", "sizes": [0.1, 0.2, 0.3]},
    "warp (WaNet)": {"kind": "warp", "strength": 0.5},
    "quantize (3 bits)": {"kind": "quantize", "bits": 3},
    "quantize (3 bits, dithered)": {"kind": "quantize", "bits": 3, "dither": True},
    "low_frequency": {"kind": "low_frequency", "eps": 0.05},
    "reflection (focal)": {"kind": "reflection"},
    "adaptive_blend": {"kind": "adaptive_blend"},
    "sample_specific": {"kind": "sample_specific", "eps": 0.05},
    "compose (frame + patch)": {
        "kind": "compose",
        "triggers": [{"kind": "frame"}, {"kind": "patch"}],
    },
}


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
    adapter = TypeAdapter(TriggerSpec)
    print(
        f"{args.batch} images of 3x{args.size}x{args.size} on {device}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, raw in EXAMPLES.items():
        trigger = adapter.validate_python(raw).build((3, args.size, args.size))
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
