"""Which runs of a grid train together as one stacked model, and running such a stack.

Runs whose configs differ only in what a member of a stack may have of its own (its
poisoned data and trigger, seeds, learning rate, weight decay and momentum, its
evaluation and defence, where it writes and how often it checkpoints) train the same
architecture on tensors of one shape for the same number of steps: they can share a stack
(``train.stacked``). The planner groups them from their configs, at most ``most`` to a
stack; the run itself checks what configs cannot say (the training set's size after
poisoning, a model without dropout, no checkpoint to continue from), and a member that
does not fit trains alone, so grouping never changes what a run computes.

Runs that share a trained model (``training_key``) are not stacked: they wait for one
another's training instead.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from triggerlab.errors import ArgumentError
from triggerlab.grid.plan import PlannedRun

# Off unless asked: on the 2-core machine a stack of 16 small CNNs trains 1.7x the images/s
# of one run at 16 px but 0.7x at 28 px, where the grouped convolutions are slower per image
# than a run's own (benchmarks/stacked.py); so a grid asks for it with --stack K.
DEFAULT_STACK = 1
MAX_STACK = 1024

# Settings a member of a stack may have of its own.
OWN = {
    "output": None,
    "poison": None,
    "trigger": None,
    "evaluation": None,
    "defense": None,
    "data": {"seed", "root", "download"},
    "train": {"lr", "weight_decay", "momentum", "seed", "threads", "checkpoint_every"}
    | {"keep_checkpoints"},
}


def check_stack(most: int) -> None:
    if not 1 <= most <= MAX_STACK:
        raise ArgumentError("stack", f"expected 1 (no stacking) to {MAX_STACK}, got {most}")


def stack_key(run: PlannedRun) -> str | None:
    """What the runs of one stack share (canonical JSON of the config without what members
    may have of their own); None for a run that cannot be stacked."""
    train = run.config.train
    if run.training_key is not None or train.precision != "fp32" or train.compile:
        return None
    if run.config.poison_schedule == "per_batch":  # poisoned in the loop: no stacked hook
        return None
    config = run.config.model_dump(mode="json")
    shared: dict[str, Any] = {}
    for section, values in config.items():
        own = OWN.get(section, set())
        if own is None:
            continue
        if isinstance(values, dict):
            shared[section] = {k: v for k, v in values.items() if k not in own}
        else:
            shared[section] = values
    return json.dumps(shared, sort_keys=True, default=str)


def stack_groups(plan: Sequence[PlannedRun], most: int = DEFAULT_STACK) -> list[list[PlannedRun]]:
    """The plan's runs in stacks of at most ``most`` (1: every run alone), in plan order of
    each stack's first run; a run that cannot be stacked is a stack of one."""
    check_stack(most)
    groups: dict[str, list[list[PlannedRun]]] = {}
    order: list[list[PlannedRun]] = []
    for run in plan:
        key = stack_key(run) if most > 1 else None
        if key is None:
            order.append([run])
            continue
        stacks = groups.setdefault(key, [])
        if not stacks or len(stacks[-1]) == most:
            stacks.append([])
            order.append(stacks[-1])
        stacks[-1].append(run)
    return order


def execute_stack(arguments: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """``execute_run`` for each member's arguments, their training stacked; each result as
    ``execute_run`` gives it (a failed member is recorded as failed, the others go on)."""
    from triggerlab.grid.execute import execute_run

    if len(arguments) == 1:
        return [execute_run(*arguments[0])]
    from triggerlab.run.stack_group import run_stacked

    results, _ = run_stacked([functools.partial(execute_run, *a) for a in arguments])
    return results
