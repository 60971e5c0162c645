"""Stacked training: images/s of one run alone against K runs trained as one stacked model.

    python benchmarks/stacked.py                      # small CNN, 16 and 28 px, K = 1, 4, 16, 64
    python benchmarks/stacked.py --sizes 16 --stacks 1 16 --json out.json
    python benchmarks/stacked.py --json benchmarks/results/stacked_cpu_small_cnn.json

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

Then the same for a linear head on cached features (``--head-features`` wide, 10 classes,
``--head-rows`` vectors per run, batch 128, Adam): one head alone through
``train.heads.fit_head`` (what a run uses), K heads through one ``train.heads.train_heads``
call over the features held once, each member its own batch order (a grid's repeats).

Each setting's achieved training FLOP/s (FLOPs per image and step counted on the meta
device by ``grid.cost.count_flops``, times images/s) is reported as a share of this
machine's float32 matrix-product rate, a 2048 x 2048 product measured in this process at
the same thread count: the ceiling no training step of these models can pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from triggerlab.attack.tasks import ClassificationTask
from triggerlab.config import PoisonConfig, TrainConfig
from triggerlab.grid.cost import count_flops
from triggerlab.models import build_model
from triggerlab.train.heads import (
    EpochResult,
    fit_head,
    rule_of,
    single_threaded,
    stack_of,
    train_heads,
)
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


def matmul_flops_per_s(size: int = 2048, seconds: float = 1.0) -> float:
    """The best rate of ``size`` x ``size`` float32 products over about ``seconds``."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def head_cfg(seed: int) -> TrainConfig:
    lr = 0.001 * (1 + seed % 4)
    return TrainConfig(epochs=1, batch_size=128, optimizer="adam", lr=lr, lr_schedule="constant")


def head_images_per_s(stack: int, features: torch.Tensor, rows: int) -> float:
    """Training images/s of one epoch of heads on ``features``: one head alone through
    ``fit_head`` (``stack`` 0), or ``stack`` heads, each with its own rows, targets, batch
    order and rate, through one ``train_heads`` call."""
    width = features.shape[1]
    if stack == 0:
        torch.manual_seed(0)
        head = torch.nn.Linear(width, 10)
        targets = torch.randint(0, 10, (rows,), generator=torch.Generator().manual_seed(0))
        (record,) = fit_head(
            head,
            TASK,
            features[:rows],
            targets,
            cfg=head_cfg(0),
            device=CPU,
            generator=torch.Generator().manual_seed(0),
            evaluate=lambda _: {},
            on_epoch=lambda _: None,
        )
        return record["train_images_per_s"]
    heads = []
    for seed in range(stack):
        torch.manual_seed(seed)
        heads.append(torch.nn.Linear(width, 10))
    own_rows = torch.stack(
        [
            torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(s))[:rows]
            for s in range(stack)
        ]
    )
    targets = torch.randint(0, 10, (stack, rows), generator=torch.Generator().manual_seed(1))
    times: list[float] = []

    def epoch_done(result: EpochResult) -> None:
        times.append(result.seconds)

    with single_threaded(CPU):  # as fit_head trains: one thread does a head's products best
        train_heads(
            stack_of(heads, [head_cfg(s) for s in range(stack)]),
            rule_of(head_cfg(0), TASK),
            features,
            own_rows,
            targets,
            [torch.Generator().manual_seed(s) for s in range(stack)],
            epoch_done,
        )
    return stack * rows / times[0]


def interleaved_medians(
    settings: list[int], rounds: int, measure: Callable[[int], float]
) -> dict[int, float]:
    """Each setting's median over ``rounds``, the settings alternating within each round so
    that all of them see the same machine load."""
    samples: dict[int, list[float]] = {k: [] for k in settings}
    for _ in range(rounds):
        for setting in settings:
            samples[setting].append(measure(setting))
    return {k: statistics.median(v) for k, v in samples.items()}


def achieved(images_per_s: float, flops_per_image: float, peak: float) -> dict[str, float]:
    rate = images_per_s * flops_per_image
    return {"images_per_s": images_per_s, "flops_per_s": rate, "share_of_matmul": rate / peak}


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
    parser.add_argument("--head-stacks", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--head-features", type=int, default=1280, help="EfficientNet-Lite0's")
    parser.add_argument("--head-rows", type=int, default=1438, help="the digits' training set")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_flops_per_s()
    print(
        f"float32 2048 x 2048 product: {peak / 1e9:,.0f} GFLOP/s at "
        f"{torch.get_num_threads()} threads"
    )
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
        "matmul_flops_per_s": peak,
        "sizes": {},
    }
    for size in args.sizes:
        images_per_s(4, size, 4 * args.batch_size * 2, args.batch_size)  # warm up
        medians = interleaved_medians(
            settings,
            args.rounds,
            lambda k, side=size: images_per_s(k, side, args.images, args.batch_size),
        )
        step = count_flops(build_model("small_cnn", 1, (size, size), 10), (1, size, size)).train
        alone = medians[0]
        rows: dict[str, Any] = {"flops_per_image_step": step, "alone": achieved(alone, step, peak)}
        print(
            f"{size} px, batch {args.batch_size}, {step / 1e6:.2f} MFLOP an image-step: one run "
            f"alone {alone:,.0f} images/s ({rows['alone']['share_of_matmul']:.1%} of the product)"
        )
        for stack in args.stacks:
            rate = medians[stack]
            rows[f"K={stack}"] = {**achieved(rate, step, peak), "vs_alone": rate / alone}
            print(
                f"  K={stack:<3} stacked {rate:>9,.0f} images/s  {rate / alone:5.2f}x alone  "
                f"{rows[f'K={stack}']['share_of_matmul']:.1%} of the product"
            )
        figures["sizes"][str(size)] = rows
    features = torch.randn(args.head_rows, args.head_features)
    head_step = count_flops(torch.nn.Linear(args.head_features, 10), (args.head_features,)).train
    head_images_per_s(4, features, args.head_rows)  # warm up
    head_medians = interleaved_medians(
        [0, *args.head_stacks],
        args.rounds,
        lambda k: head_images_per_s(k, features, args.head_rows),
    )
    alone = head_medians[0]
    heads: dict[str, Any] = {
        "features": args.head_features,
        "rows": args.head_rows,
        "flops_per_image_step": head_step,
        "alone": achieved(alone, head_step, peak),
    }
    print(
        f"linear head on {args.head_features} cached features, {args.head_rows} rows, batch 128: "
        f"one head alone {alone:,.0f} images/s"
    )
    for stack in args.head_stacks:
        rate = head_medians[stack]
        heads[f"K={stack}"] = {**achieved(rate, head_step, peak), "vs_alone": rate / alone}
        print(f"  K={stack:<3} stacked {rate:>11,.0f} images/s  {rate / alone:5.2f}x alone")
    figures["cached_head"] = heads
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    main()
