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

How many runs a stack takes (``Stack``): ``auto`` (the default) stacks a kind of run only
where stacking pays on this machine (``auto_rule``), an integer K up to K of every kind that
can stack, and 1 none.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from triggerlab.errors import ArgumentError, TriggerlabError
from triggerlab.grid.plan import PlannedRun


class Costed(Protocol):
    """What ``auto`` reads of a kind of run's cost (``grid.cost.RunKind``)."""

    cached: bool
    flops_per_sample: dict[str, float]


# The planner's cost of each run handed over, in order (``grid.cost.kinds_for``), for auto.
Kinds = Callable[[list[PlannedRun]], list[Costed]]
Stack = int | Literal["auto"]
AUTO: Stack = "auto"
DEFAULT_STACK: Stack = AUTO
MAX_STACK = 1024
# What ``auto`` stacks, at most, of a kind of run that pays:
# heads on cached features: 64. benchmarks/cached_heads.py (README, "Heads on cached
# features"): per run, a stack of 16 with their own batch orders took 145 ms against 201 ms
# alone, and 64 sharing a batch order 57 ms; 64 feature tables of a grid's cells are small
# (one table held once, each member's poisoned rows beside it).
HEAD_STACK = 64
# whole models: 16. benchmarks/stacked.py (README, "Speed"): the small CNN at 16 px trained
# 1.41x the images/s of one run alone at K = 4, 1.72x at K = 16 and 1.53x at K = 64 (one
# thread, loaded machine; 1.81x at K = 16 on the quiet machine): past 16 a stack gains no more.
MODEL_STACK = 16
# On a CPU a stack of whole models pays only where a run's kernels are tiny. Measured on the
# 2-core machine (benchmarks/stacked.py --sizes 16 20 24, then --sizes 16 18, --stacks 1 16
# --rounds 2 --threads 1), the small CNN stacked at K = 16 against one run alone, with its
# training FLOPs per sample (forward and backward, as the planner counts them):
#   16 px (6.7e5 FLOP): 1.28x and 1.17x (two runs)   18 px (1.1e6): 0.97x
#   20 px (2.1e6): 0.84x   24 px (4.3e6): 0.71x   28 px (7.4e6): 0.72x (README table)
# so auto stacks whole models on a CPU up to 8e5 training FLOPs per sample: 16 px pays,
# 18 px breaks even.
CPU_STACK_FLOPS = 8.0e5

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


def check_stack(most: Stack) -> None:
    if most == AUTO:
        return
    if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= MAX_STACK:
        raise ArgumentError(
            "stack", f"expected auto, or 1 (no stacking) to {MAX_STACK}, got {most!r}"
        )


def parse_stack(text: str) -> Stack:
    """The stack option's value: ``auto`` or a whole number, checked."""
    value: Stack
    if text.strip().lower() == AUTO:
        value = AUTO
    else:
        try:
            value = int(text)
        except ValueError:
            raise ArgumentError(
                "stack", f"expected auto, or 1 (no stacking) to {MAX_STACK}, got {text!r}"
            ) from None
    check_stack(value)
    return value


@dataclass(frozen=True)
class StackRule:
    """How many runs of one stack key a stack takes, and why; ``by_seed``: a stack takes
    runs of one ``train.seed`` only (heads: members with one batch order read each batch of
    features once, for all of them, ``train.heads.train_heads``)."""

    most: int
    why: str
    by_seed: bool = False


def auto_rule(run: PlannedRun, kind: Costed | None) -> StackRule:
    """Where stacking pays, for the runs of ``run``'s stack key (``kind``: its cost, None
    where the planner could not work it out): heads on cached features always; whole models
    on a GPU (unmeasured there), and on a CPU where a run's training FLOPs per sample are
    small (``CPU_STACK_FLOPS``)."""
    import torch

    if kind is None:
        return StackRule(1, "alone: the planner could not work out its cost")
    if kind.cached:
        return StackRule(HEAD_STACK, "heads on cached features, one seed a stack", by_seed=True)
    device = run.config.train.device  # cuda without a GPU here: the run itself refuses it
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return StackRule(MODEL_STACK, "whole models on the GPU (stacking unmeasured there)")
    flops = kind.flops_per_sample["train"]
    if flops <= CPU_STACK_FLOPS:
        return StackRule(
            MODEL_STACK, f"whole models on the CPU at {flops:.3g} training FLOP a sample"
        )
    return StackRule(
        1,
        f"alone: whole models on the CPU at {flops:.3g} training FLOP a sample, over the "
        f"{CPU_STACK_FLOPS:.3g} where a stack pays",
    )


def stack_rules(
    plan: Sequence[PlannedRun], most: Stack, kinds: Kinds | None = None
) -> dict[str, StackRule]:
    """The rule of each stack key of the plan's runs; ``auto`` needs ``kinds`` (the
    planner's ``grid.cost.kinds_for``, which loads each kind's dataset once)."""
    check_stack(most)
    firsts: dict[str, PlannedRun] = {}
    for run in plan:
        key = stack_key(run) if most != 1 else None
        if key is not None:
            firsts.setdefault(key, run)
    if most != AUTO:
        assert isinstance(most, int)
        return {key: StackRule(most, f"up to {most}, as asked") for key in firsts}
    if kinds is None:
        raise ValueError("stack_rules: auto needs the planner's kinds (cost.kinds_for)")
    runs = list(firsts.values())
    found: list[Costed | None] = [None] * len(runs)
    try:
        found = list(kinds(runs))
    except Exception as exc:  # deciding to stack must never stop a grid: its runs go alone
        if not isinstance(exc, TriggerlabError):  # a bad config: its run says so, alone
            warnings.warn(f"stacking auto: every run alone ({exc})", stacklevel=2)
    pairs = zip(firsts.items(), found, strict=True)
    return {key: auto_rule(run, kind) for (key, run), kind in pairs}


def unstackable(run: PlannedRun) -> str | None:
    """Why a run cannot be stacked at all (None: it can)."""
    train = run.config.train
    if run.training_key is not None:
        return "its trained model is shared with other runs"
    if train.precision != "fp32" or train.compile:
        return "mixed precision or train.compile"
    if run.config.poison_schedule == "per_batch":  # poisoned in the loop: no stacked hook
        return "poisoned in the training loop (poison.schedule: per_batch)"
    return None


def stack_key(run: PlannedRun) -> str | None:
    """What the runs of one stack share (canonical JSON of the config without what members
    may have of their own); None for a run that cannot be stacked."""
    if unstackable(run) is not None:
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


def stack_groups(
    plan: Sequence[PlannedRun],
    most: Stack,
    rules: Mapping[str, StackRule] | None = None,
    kinds: Kinds | None = None,
    workers: int = 1,
) -> list[list[PlannedRun]]:
    """The plan's runs in stacks of at most ``most`` (1: every run alone; ``auto``: as
    ``auto_rule`` says for each kind, from ``kinds``), in plan order of each stack's first
    run; a run that cannot be stacked is a stack of one. ``rules``: ``stack_rules``, worked
    out already.

    A stack runs in one worker, its members' preparing, poisoning and evaluating one after
    another: with ``workers`` side by side, the runs of a stack key are cut into at least as
    many stacks as there are workers (of sizes as equal as the limit allows), so no worker
    waits while another works through one stack of everything."""
    rules = stack_rules(plan, most, kinds) if rules is None else rules
    keyed: list[tuple[PlannedRun, tuple[str, int | None] | None]] = []
    for run in plan:
        key = stack_key(run) if most != 1 else None
        rule = rules.get(key) if key is not None else None
        if rule is None or rule.most == 1:
            keyed.append((run, None))
        else:
            keyed.append((run, (key, run.config.train.seed if rule.by_seed else None)))
    counts = Counter(group for _, group in keyed if group is not None)
    groups: dict[tuple[str, int | None], list[list[PlannedRun]]] = {}
    order: list[list[PlannedRun]] = []
    for run, group in keyed:
        if group is None:
            order.append([run])
            continue
        size = counts[group]
        limit = min(rules[group[0]].most, max(1, math.ceil(size / max(1, workers))))
        limit = math.ceil(size / math.ceil(size / limit))  # equal sizes, as few stacks
        stacks = groups.setdefault(group, [])
        if not stacks or len(stacks[-1]) == limit:
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
