"""A linear head on cached features: the generic loop against the written-out one, and stacks.

    python benchmarks/cached_heads.py            # ~1 min on 2 CPU cores; results/cached_heads.json
    python benchmarks/cached_heads.py --quick    # 3 epochs, stacks up to 4: a smoke test

One run of ``configs/ref001_offline.yaml`` (its base cell: the digits at 64x64 RGB,
EfficientNet-Lite0 with ImageNet weights, only the final 1,280 x 10 linear layer training on
1,438 cached feature vectors; Adam, 20 epochs, batch 128) is prepared once: data, poisoning,
the feature cache (built on first use under ``TRIGGERLAB_CACHE``), the triggered test
features. Then, in this one process and from the same initial weights, its head trains:

* ``before``: through ``train.loop.fit`` (autograd, ``torch.optim.Adam``, a progress update
  per batch), evaluating the test features after every epoch: what runs did until now;
* ``before_1_thread``: the same with one CPU thread (as a grid's workers run with
  ``--threads 1``): the generic loop's overhead without threads waiting on each other;
* ``after``: through ``train.heads.fit_head``, which the runs use now, same evaluation;
* ``stack_K_own_orders``: K members (K = 1, 4, 16, 64), each its own seed and batch order,
  as one ``train_heads`` call over the features held once, each member's test metrics after
  every epoch; reported per member;
* ``stack_K_one_order``: K = 4, 16, 64, 180 members sharing the seed, as a grid's cells of
  one repeat do (180 in reference 001's matrix), each with its own rows at 2 % of the
  positions (its poisoned samples): each batch's features are read once, for all of them.

Each is timed three times, interleaved, and the fastest kept (the machine is shared; every
time is in the JSON). Reported: wall and CPU seconds per run and images/s of each, the wall
time ratios to ``before``, and the largest difference between the metrics ``before`` and
``after`` found after each epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from triggerlab.grid.spec import base_experiment
from triggerlab.run import stages
from triggerlab.run.inputs import training_inputs
from triggerlab.run.prepare import prepare
from triggerlab.run.rundir import RunDir
from triggerlab.train.heads import (
    EpochResult,
    fit_head,
    rule_of,
    single_threaded,
    stack_of,
    train_heads,
)
from triggerlab.train.loop import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ref001_offline.yaml"
REPEATS = 3
# (members, one batch order): own seeds, or a grid's cells of one repeat (180 in ref001)
STACKS = [(m, False) for m in (1, 4, 16, 64)] + [(m, True) for m in (4, 16, 64, 180)]


def prepared(epochs: int | None, folder: Path):
    settings = [f"output.directory={folder}"]
    if epochs is not None:
        settings.append(f"train.epochs={epochs}")
    ctx = prepare(base_experiment(CONFIG, settings))
    run = RunDir.allocate(folder, "bench", "bench", exact=True)
    attack = stages.poison(ctx, run)
    inputs = training_inputs(ctx)
    assert inputs.pool is not None, inputs.record
    evaluate = stages.Evaluator.of(ctx, attack, inputs)
    features = inputs.of(attack.train.train, attack.train.changed).values
    return ctx, attack, inputs, evaluate, features


def one_run(trainer, ctx, attack, inputs, evaluate, features, start_state, progress):
    inputs.model.load_state_dict(start_state)
    begin, cpu = time.perf_counter(), time.process_time()
    history = trainer(
        inputs.model,
        ctx.task,
        features,
        attack.train.train.targets,
        cfg=ctx.cfg.train,
        device=ctx.device,
        generator=torch.Generator().manual_seed(ctx.seeds["order"]),
        evaluate=evaluate.metrics,
        on_epoch=lambda _record: None,
        progress=progress,
    )
    return time.perf_counter() - begin, time.process_time() - cpu, history


def stacked(ctx, attack, inputs, evaluate, features, members: int, one_order: bool):
    """Seconds for ``members`` copies of the run trained as one stack, with every member's
    test metrics after every epoch. ``one_order``: they share the run's seed (a grid's cells
    of one repeat) and each has its own rows at 2 % of the positions (its poisoned samples;
    the triggered test features stand in for them); else each has its own seed."""
    head = inputs.model
    heads = []
    for member in range(members):
        torch.manual_seed(member)
        head.reset_parameters()
        heads.append(stack_of([head], [ctx.cfg.train]))
    size = features.shape[0]
    rows = torch.arange(size).repeat(members, 1)
    if one_order:
        swapped = torch.Generator().manual_seed(0)
        for member in range(1, members):
            positions = torch.randperm(size, generator=swapped)[: math.ceil(0.02 * size)]
            rows[member, positions] = size + torch.randint(
                0, evaluate.triggered.shape[0], (positions.numel(),), generator=swapped
            )
    targets = attack.train.train.targets.expand(members, size)
    test = ctx.data.test.targets
    begin, cpu = time.perf_counter(), time.process_time()
    table = torch.cat([features.float(), evaluate.triggered])  # held once: rows index it
    stack = stack_of([head] * members, [ctx.cfg.train] * members)
    stack.params.copy_(torch.cat([h.params for h in heads]))

    def predictions(features: torch.Tensor) -> torch.Tensor:
        outputs = stack.outputs(features)  # (members, N, C): every member in one product
        return ctx.task.predict(outputs.flatten(0, 1)).view(members, -1)

    def epoch_done(_result: EpochResult) -> None:
        clean, triggered = predictions(evaluate.clean), predictions(evaluate.triggered)
        for member in range(members):
            ctx.task.metrics(test, clean[member], triggered[member])

    seeds = [0] * members if one_order else list(range(members))
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    train_heads(
        stack, rule_of(ctx.cfg.train, ctx.task), table, rows, targets, generators, epoch_done
    )
    return time.perf_counter() - begin, time.process_time() - cpu


def row(images: int, times: list[tuple[float, float]]) -> dict[str, float]:
    """The fastest of the repeats: wall and CPU seconds per run, images/s of wall time."""
    wall, cpu = min(t[0] for t in times), min(t[1] for t in times)
    return {"seconds_per_run": wall, "cpu_seconds_per_run": cpu, "images_per_s": images / wall}


def largest_difference(before: list[dict], after: list[dict], names) -> float:
    return max(abs(a[n] - b[n]) for a, b in zip(before, after, strict=True) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "cached_heads.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="triggerlab-heads-") as folder:
        ctx, attack, inputs, evaluate, features = prepared(3 if args.quick else None, Path(folder))
    start_state = {k: v.clone() for k, v in inputs.model.state_dict().items()}
    images = ctx.cfg.train.epochs * features.shape[0]
    counted = []
    common = (ctx, attack, inputs, evaluate, features, start_state, counted.append)
    one_run(fit_head, *common)  # warm both paths: first calls allocate and load code
    one_run(fit, *common)
    timed: dict[str, list[tuple[float, float]]] = {
        "before": [],
        "before_1_thread": [],
        "after": [],
    }
    for _ in range(REPEATS):  # interleaved, the fastest of each kept: the machine is shared
        *wall_cpu, before = one_run(fit, *common)
        timed["before"].append(tuple(wall_cpu))
        with single_threaded(ctx.device):
            timed["before_1_thread"].append(tuple(one_run(fit, *common)[:2]))
        *wall_cpu, after = one_run(fit_head, *common)
        timed["after"].append(tuple(wall_cpu))
    names = ("train_loss", *ctx.task.metric_names)
    figures = {name: row(images, times) for name, times in timed.items()}
    stacks = [(4, False), (4, True)] if args.quick else STACKS
    for members, one_order in stacks:
        with single_threaded(ctx.device):
            times = [
                stacked(ctx, attack, inputs, evaluate, features, members, one_order)
                for _ in range(REPEATS)
            ]
        name = f"stack_{members}_{'one_order' if one_order else 'own_orders'}"
        timed[name] = [(wall / members, cpu / members) for wall, cpu in times]
        figures[name] = row(images, timed[name])
    before_s = figures["before"]["seconds_per_run"]
    for figure in figures.values():
        figure["speedup"] = before_s / figure["seconds_per_run"]
    record = {
        "run": f"{CONFIG.name} base cell: {features.shape[0]} cached {features.shape[1]}-feature "
        f"vectors, {ctx.cfg.train.epochs} epochs, batch {ctx.cfg.train.batch_size}",
        "quick": args.quick,
        "figures": figures,
        "wall_and_cpu_seconds_of_each_repeat": timed,
        "largest_metric_difference_before_after": largest_difference(before, after, names),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
    }
    for name, figure in figures.items():
        print(
            f"{name:>20}: {figure['seconds_per_run'] * 1e3:9.2f} ms/run  "
            f"{figure['cpu_seconds_per_run'] * 1e3:9.2f} CPU ms/run  "
            f"{figure['images_per_s']:>9,.0f} images/s  {figure['speedup']:6.1f}x"
        )
    difference = record["largest_metric_difference_before_after"]
    print(f"largest metric difference before/after: {difference:.2e}")
    if not args.quick:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
