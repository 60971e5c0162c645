"""Stacked training: images/s of one run alone against K runs trained as one stacked model.

    python benchmarks/stacked.py                      # small CNN, 16 and 28 px, K = 1, 4, 16, 64
    python benchmarks/stacked.py --sizes 16 --stacks 1 16 --json out.json

In one process, for each image size, it trains the small CNN (``small_cnn``, 1 channel,
10 classes, the config's default batch size 32, Adam) for one epoch on random uint8
images:

  * alone: ``train.loop.fit``, the loop every run uses;
  * stacked: ``train.stacked.fit_stacked`` over K members, each with its own weights,
    data, batch order and learning rate (the configs of a grid's runs).

Every measurement trains the same total number of images (``--images``: K members of
images/K each), and reports training images/s over all members (evaluation excluded: the
epoch's ``train_time_s``). The rounds alternate between the settings; medians over rounds
are reported, with each stack's images/s as a multiple of one run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from typing import Any

import torch

from triggerlab.attack.tasks import ClassificationTask
from triggerlab.config import PoisonConfig, TrainConfig
from triggerlab.models import build_model
from triggerlab.train.loop import StagePlan, fit
from triggerlab.train.stacked import FitCall, fit_stacked

TASK = ClassificationTask(PoisonConfig(rate=0.1, target=0), [str(i) for i in range(10)])
CPU = torch.device("cpu")


def member(seed: int, size: int, n: int, batch_size: int) -> FitCall:
    """One run's training: its model, data and order from ``seed``, its own learning rate."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", 1, (size, size), 10)
    model = model.to(memory_format=torch.channels_last)  # as a run's model (train.channels_last)
    data = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), generator=data, dtype=torch.uint8)
    targets = torch.randint(0, 10, (n,), generator=data)
    cfg = TrainConfig(
        epochs=1,
        batch_size=batch_size,
        optimizer="adam",
        lr=0.001 * (1 + seed % 4),
        lr_schedule="constant",
    )
    return FitCall(
        model,
        TASK,
        images,
        targets,
        cfg,
        CPU,
        torch.Generator().manual_seed(seed),
        lambda _: {},
        lambda _: None,
        StagePlan(),
    )


def images_per_s(stack: int, size: int, total: int, batch_size: int) -> float:
    """Training images/s of one epoch: one run alone (``stack`` 0) or ``stack`` members."""
    if stack == 0:
        call = member(0, size, total, batch_size)
        (record,) = fit(
            call.model,
            call.task,
            call.images,
            call.targets,
            cfg=call.cfg,
            device=CPU,
            generator=call.generator,
            evaluate=call.evaluate,
            on_epoch=call.on_epoch,
        )
        return record["train_images_per_s"]
    n = max(total // stack, 2 * batch_size)
    results = fit_stacked([member(seed, size, n, batch_size) for seed in range(stack)])
    records = [r[0] for r in results if isinstance(r, list)]
    assert len(records) == stack, results
    return stack * records[0]["train_images_per_s"]  # each member's images in the epoch's time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 28], help="image sides")
    parser.add_argument("--stacks", type=int, nargs="+", default=[1, 4, 16, 64], help="K")
    parser.add_argument("--images", type=int, default=8192, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [0, *args.stacks]  # 0: one run alone, through the plain loop
    figures: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "model": "small_cnn",
        "batch_size": args.batch_size,
        "images_per_measurement": args.images,
        "rounds": args.rounds,
        "sizes": {},
    }
    for size in args.sizes:
        images_per_s(4, size, 4 * args.batch_size * 2, args.batch_size)  # warm up
        samples: dict[int, list[float]] = {k: [] for k in settings}
        for _ in range(args.rounds):
            for stack in settings:
                samples[stack].append(images_per_s(stack, size, args.images, args.batch_size))
        alone = statistics.median(samples[0])
        rows = {"alone": {"images_per_s": alone}}
        print(f"{size} px, batch {args.batch_size}: one run alone {alone:,.0f} images/s")
        for stack in args.stacks:
            rate = statistics.median(samples[stack])
            rows[f"K={stack}"] = {"images_per_s": rate, "vs_alone": rate / alone}
            print(f"  K={stack:<3} stacked {rate:>9,.0f} images/s  {rate / alone:5.2f}x alone")
        figures["sizes"][str(size)] = rows
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    main()
