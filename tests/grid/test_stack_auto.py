"""``--stack auto``, the default: which kinds of run stack, and how many to a stack."""

import numpy as np
from support.gridspecs import BASE

from triggerlab.grid.cost import kinds_for
from triggerlab.grid.plan import plan_grid
from triggerlab.grid.spec import GridSpec
from triggerlab.grid.stacking import (
    CPU_STACK_FLOPS,
    HEAD_STACK,
    MODEL_STACK,
    auto_rule,
    stack_groups,
    stack_rules,
)

RATES = [round(float(r), 4) for r in np.linspace(0.01, 0.3, 70)]  # 70 cells of one shape


def plan_of(base, rates=RATES):
    return plan_grid(GridSpec.model_validate({"base": base, "grid": {"poison.rate": rates}}))


def sizes(plan, most="auto"):
    return [len(stack) for stack in stack_groups(plan, most, kinds=kinds_for)]


def only_rule(plan):
    (rule,) = stack_rules(plan, "auto", kinds_for).values()
    return rule


def test_heads_on_cached_features_stack_up_to_64():
    plan = plan_of({**BASE, "model": {**BASE["model"], "freeze": "classifier"}})
    assert only_rule(plan).why == "heads on cached features, one seed a stack"
    assert HEAD_STACK < len(RATES) < 2 * HEAD_STACK
    assert sizes(plan) == [35, 35]  # two stacks of at most 64, as equal as they go


LARGE = {**BASE, "data": {"name": "digits", "resize": 28}, "model": {"name": "small_cnn"}}


def test_whole_models_on_the_cpu_stack_only_when_their_steps_are_small():
    tiny = plan_of(BASE)  # the 4-channel small CNN on 16 px: 8e4 training FLOPs a sample
    assert only_rule(tiny).why == "whole models on the CPU at 8.03e+04 training FLOP a sample"
    assert sizes(tiny) == [14] * 5  # five stacks of at most 16, equal
    # the default small CNN on 28 px: 7.4e6, where a stack trains slower than runs alone
    large = plan_of(
        {**BASE, "data": {"name": "digits", "resize": 28}, "model": {"name": "small_cnn"}}
    )
    rule = only_rule(large)
    assert rule.most == 1 and rule.why.startswith("alone: whole models on the CPU at 7.44e+06")
    assert sizes(large) == [1] * len(RATES)
    assert sizes(large, 32) == [24, 24, 22]  # --stack K stacks wherever it can
    assert sizes(large, 1) == [1] * len(RATES)  # --stack 1: off


def test_whole_models_on_a_gpu_stack():
    (run,) = plan_of(LARGE, [0.1])
    (kind,) = kinds_for([run])
    assert kind.flops_per_sample["train"] > CPU_STACK_FLOPS and not kind.cached
    on_gpu = plan_of({**LARGE, "train": {**LARGE["train"], "device": "cuda"}}, [0.1])[0]
    assert auto_rule(on_gpu, kind).most == MODEL_STACK  # decided without a GPU here
    assert auto_rule(run, None).most == 1  # a kind the planner could not cost trains alone


def test_stacks_are_cut_so_that_every_worker_has_one():
    """A stack runs in one worker: 70 runs that could share one stack of up to 64 go to two
    workers as two stacks (no worker idle while the other works through everything)."""
    plan = plan_of({**BASE, "model": {**BASE["model"], "freeze": "classifier"}})
    assert [len(s) for s in stack_groups(plan, "auto", kinds=kinds_for, workers=2)] == [35, 35]
    few = plan_of(BASE, RATES[:24])
    assert [len(s) for s in stack_groups(few, "auto", kinds=kinds_for, workers=2)] == [12, 12]
    assert [len(s) for s in stack_groups(few, 16, workers=3)] == [8, 8, 8]
    assert [len(s) for s in stack_groups(few, "auto", kinds=kinds_for, workers=48)] == [1] * 24


def test_heads_stack_with_runs_of_their_own_seed():
    """Heads that share a batch order (a seed) read each batch of features once for all of
    them; runs of two repeats make two stacks, not one of mixed orders."""
    spec = GridSpec.model_validate(
        {
            "base": {**BASE, "model": {**BASE["model"], "freeze": "classifier"}},
            "grid": {"poison.rate": RATES[:6]},
            "repeats": 2,
        }
    )
    stacks = stack_groups(plan_grid(spec), "auto", kinds=kinds_for)
    assert sorted(len(s) for s in stacks) == [6, 6]
    assert all(len({r.config.train.seed for r in s}) == 1 for s in stacks)
