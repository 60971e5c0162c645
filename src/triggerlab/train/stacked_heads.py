"""The heads of a stack's members, on cached features, trained as one ``train_heads`` stack.

When every member of a stack trains a linear head on cached feature vectors (the calls
``fit_head`` takes its written-out path for), their features are mostly the same rows: the
clean samples of one cache, at the same positions; only each run's poisoned samples differ.
The table ``train_heads`` reads holds those rows once: the first member's features, and
after them each other member's rows that differ from the first member's at that position.
Each member keeps its own rows into the table, targets, batch order (its generator), learning
rate schedule and weight decay; after every epoch its head is loaded into its own model,
evaluated and logged exactly as ``fit_head`` does for a run alone, so its records and metrics
are the run's alone, to float rounding. A member whose loss stops being finite, or whose
evaluation fails, fails alone; the others go on.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from triggerlab.train.heads import (
    EpochResult,
    load_member,
    not_finite,
    rule_of,
    single_threaded,
    stack_of,
    train_heads,
    why_not_fast,
)
from triggerlab.train.loop import batch_starts, epoch_record
from triggerlab.train.stacked import FitCall

Result = list[dict[str, Any]] | BaseException


def head_key(call: FitCall) -> tuple[Any, ...] | None:
    """What a stack of heads must share beyond ``stack_key`` (how every member learns: the
    optimiser's momentum is one for the stack); None when ``fit_head`` would not take its
    written-out path for the call."""
    if why_not_fast(call.model, call.task, call.images, call.cfg, call.stage, call.augment):
        return None
    return (rule_of(call.cfg, call.task),)


def shared_table(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One feature table for every member and each member's rows into it, ``(R, N)``: the
    first member's features, then the rows of each other member that differ from the first
    member's at the same position (its poisoned samples; all of them for another data seed)."""
    first = images[0]
    count = first.shape[0]
    parts = [first]
    rows = [torch.arange(count)]
    end = count
    for features in images[1:]:
        changed = (features != first).any(1).nonzero().squeeze(1)
        own = torch.arange(count)
        own[changed] = torch.arange(end, end + changed.numel())
        parts.append(features[changed])
        rows.append(own)
        end += changed.numel()
    return torch.cat(parts), torch.stack(rows)


class _NoneLeft(Exception):
    """Every member has failed: the stack stops."""


@torch.no_grad()
def fit_heads(calls: Sequence[FitCall]) -> list[Result]:
    """Train every call's head as one stack (the calls share ``stack_key`` and ``head_key``);
    per member, its epochs' records as ``fit_head`` returns them, or the exception that
    ended its training. Each member's model holds its trained head afterwards."""
    first = calls[0]
    device, cfg = first.device, first.cfg
    models = [c.model for c in calls]
    assert all(isinstance(m, nn.Linear) for m in models)
    stack = stack_of(models, [c.cfg for c in calls])  # type: ignore[arg-type]
    features, rows = shared_table([c.images for c in calls])
    targets = torch.stack([c.targets for c in calls]).to(device)
    batches = len(batch_starts(first.images.shape[0], cfg.batch_size))
    results: list[Result] = [[] for _ in calls]

    def epoch_done(result: EpochResult) -> None:
        for member, call in enumerate(calls):
            history = results[member]
            if isinstance(history, BaseException):
                continue
            try:
                history.append(_member_epoch(call, stack, member, result, batches))
                call.on_epoch(history[-1])
            except Exception as exc:  # this member's run fails; the stack goes on without it
                results[member] = exc
        if all(isinstance(r, BaseException) for r in results):
            raise _NoneLeft

    for model in models:
        model.train()
    # _NoneLeft: every member has failed, nothing is left to train
    with single_threaded(device), contextlib.suppress(_NoneLeft):
        train_heads(
            stack,
            rule_of(cfg, first.task),
            features.to(device),
            rows.to(device),
            targets,
            [c.generator for c in calls],
            epoch_done,
        )
    return results


def _member_epoch(
    call: FitCall, stack: Any, member: int, result: EpochResult, batches: int
) -> dict[str, Any]:
    """The member's record of the epoch, as ``fit_head`` makes it for a run alone."""
    epoch = call.stage.first_epoch + result.epoch - 1
    loss = float(result.losses[member])
    if not math.isfinite(loss):
        raise not_finite(epoch, loss, int(result.first_bad[member]), batches)
    assert isinstance(call.model, nn.Linear)
    load_member(call.model, stack, member)
    return epoch_record(
        epoch,
        loss,
        result.seen,
        time.perf_counter() - result.seconds,
        result.seconds,
        call.evaluate(call.model),
    )
