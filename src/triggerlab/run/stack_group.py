"""Runs that train as one stack: each run goes its own way, but their training happens once,
stacked (``train.stacked``).

``run_stacked`` runs each member's whole run (``run_experiment``, or whatever it is handed)
in a thread of its own. The threads take turns: one holds the group's baton at a time, so
preparing, poisoning, evaluating, drawing and defending run one member after the other,
exactly as runs do one after the other in a worker process (the global random generator,
which a run seeds for its weights and its defence, is never shared between two runs at
once). When a member reaches its training (``fit``, through ``fit_or_join``) it hands its
training over and lets go of the baton. Once every member has handed over its training or
ended without one (refused, failed, its model loaded from a shared training), the
coordinator trains what it received: calls that share a stack key as stacks (heads on
cached features as one stack of heads, ``train.stacked_heads``), the rest alone in their
own threads. Each member then continues with its trained model, and writes
its own run folder as it would have alone.

A member's global generator is saved when it hands over its training and put back when
it continues, since training alone does not draw from it (stacked training refuses models
with dropout).
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
from torch import nn

from triggerlab.progress import Reporter
from triggerlab.train.augment import Augment
from triggerlab.train.heads import fit_head
from triggerlab.train.loop import BatchTransform, Objective, StagePlan
from triggerlab.train.stacked import FitCall, StackUnsupported, fit_stacked, group_calls
from triggerlab.train.stacked_heads import fit_heads, head_key

T = TypeVar("T")
Outcome = list[dict[str, Any]] | BaseException | None  # None: train alone

_SLOT: ContextVar[tuple[StackGroup, int] | None] = ContextVar("triggerlab_stack", default=None)


@contextlib.contextmanager
def outside_stack() -> Iterator[None]:
    """Train alone inside a member (the clean surrogate a run trains before its own model)."""
    token = _SLOT.set(None)
    try:
        yield
    finally:
        _SLOT.reset(token)


class StackGroup:
    """The meeting point of ``size`` member threads and their coordinator."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.baton = threading.Lock()  # held by the one member thread that runs
        self._changed = threading.Condition()
        self._arrived: dict[int, FitCall] = {}
        self._ended: set[int] = set()
        self._outcomes: dict[int, Outcome] = {}
        self._open = True
        self.stacked: list[list[int]] = []  # the stacks trained (member indices), for reports
        self.records: dict[int, dict[str, Any]] = {}  # each stacked member's stack, for its summary

    def join(self, index: int, call: FitCall) -> list[dict[str, Any]] | None:
        """Hand over member ``index``'s training and wait for it; its epochs' records, or
        None when it is to train alone (the group has trained already, or found no partner)."""
        with self._changed:
            if not self._open:
                return None
            self._arrived[index] = call
            self._changed.notify_all()
        rng = torch.get_rng_state()
        self.baton.release()
        try:
            with self._changed:
                self._changed.wait_for(lambda: index in self._outcomes)
                outcome = self._outcomes.pop(index)
        finally:
            self.baton.acquire()
            torch.set_rng_state(rng)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def end(self, index: int) -> None:
        """Member ``index``'s run is over (with or without its training)."""
        with self._changed:
            self._ended.add(index)
            self._changed.notify_all()

    def coordinate(self) -> None:
        """Wait until every member has handed over its training or ended, then train."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._arrived.keys() | self._ended) == self.size)
            self._open = False
            arrived = dict(sorted(self._arrived.items()))
        outcomes = self._train(arrived)
        with self._changed:
            self._outcomes.update(outcomes)
            self._changed.notify_all()

    def _train(self, arrived: dict[int, FitCall]) -> dict[int, Outcome]:
        indices = list(arrived)
        calls = list(arrived.values())
        outcomes: dict[int, Outcome] = dict.fromkeys(indices)
        for group, fit_group in _trainers(calls, group_calls(calls)):
            if len(group) < 2:
                continue
            start = time.perf_counter()
            try:
                results = fit_group([calls[i] for i in group])
            except StackUnsupported as exc:  # nothing changed yet: each trains alone instead
                warnings.warn(f"{exc}; these runs train one by one", stacklevel=2)
                continue
            except Exception as exc:  # an error of the stack itself ends all its members
                results = [exc] * len(group)
            self.stacked.append([indices[i] for i in group])
            record = {
                "members": len(group),
                "trainer": "heads" if fit_group is fit_heads else "model",
                "train_s": time.perf_counter() - start,  # the whole stack's training, once
            }
            for i, result in zip(group, results, strict=True):
                outcomes[indices[i]] = result
                self.records[indices[i]] = record
        return outcomes


def _trainers(
    calls: Sequence[FitCall], groups: list[list[int]]
) -> list[tuple[list[int], Callable[[Sequence[FitCall]], list[Any]]]]:
    """Each group with what trains it: heads on cached features (every member a call
    ``fit_head`` trains by its written-out loop) as one ``fit_heads`` stack, split where the
    members learn by other rules; any other group as one ``fit_stacked`` model."""
    trainers: list[tuple[list[int], Callable[[Sequence[FitCall]], list[Any]]]] = []
    for group in groups:
        keys = [head_key(calls[i]) for i in group]
        if len(group) < 2 or None in keys:
            trainers.append((group, fit_stacked))
            continue
        rules: dict[Any, list[int]] = {}
        for index, key in zip(group, keys, strict=True):
            rules.setdefault(key, []).append(index)
        trainers.extend((part, fit_heads) for part in rules.values())
    return trainers


def fit_or_join(
    model: nn.Module,
    task: Objective,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    cfg: Any,
    device: torch.device,
    generator: torch.Generator,
    evaluate: Callable[[nn.Module], dict[str, float]],
    on_epoch: Callable[[dict[str, Any]], None],
    progress: Reporter | None = None,
    stage: StagePlan | None = None,
    augment: Augment | None = None,
    transform: BatchTransform | None = None,
) -> list[dict[str, Any]]:
    """``train.loop.fit``, or, in a member of a stack group, training as one of the stack.
    A run poisoned per batch (``transform``) trains alone: the stack has no per-member hook."""
    slot = _SLOT.get() if transform is None else None
    if slot is not None:
        group, index = slot
        call = FitCall(
            model,
            task,
            images,
            targets,
            cfg,
            device,
            generator,
            evaluate,
            on_epoch,
            stage or StagePlan(),
            augment,
        )
        history = group.join(index, call)
        if history is not None:
            return history
    return fit_head(  # alone: a head on cached features by the written-out loop, else fit
        model,
        task,
        images,
        targets,
        cfg=cfg,
        device=device,
        generator=generator,
        evaluate=evaluate,
        on_epoch=on_epoch,
        progress=progress,
        stage=stage,
        augment=augment,
        transform=transform,
    )


def stack_record() -> dict[str, Any] | None:
    """In a member whose training was stacked, its stack: ``members`` (how many trained
    together), ``trainer`` (``heads``: one stack of heads on cached features; ``model``: one
    stacked model) and ``train_s`` (the stack's training, all members, evaluations included);
    None for a run that trained alone."""
    slot = _SLOT.get()
    if slot is None:
        return None
    group, index = slot
    return group.records.get(index)


def run_stacked(members: Sequence[Callable[[], T]]) -> tuple[list[T], list[list[int]]]:
    """Run each member (a whole run, which catches its own errors) with its training stacked
    with the others'; their results in order, and the stacks that trained together."""
    group = StackGroup(len(members))
    results: list[Any] = [None] * len(members)
    errors: list[BaseException | None] = [None] * len(members)

    def work(index: int) -> None:
        _SLOT.set((group, index))  # this thread's own context
        group.baton.acquire()
        try:
            results[index] = members[index]()
        except BaseException as exc:  # handed to the caller's thread below
            errors[index] = exc
        finally:
            group.baton.release()
            group.end(index)

    threads = [
        threading.Thread(target=work, args=(i,), name=f"stack-member-{i}", daemon=True)
        for i in range(len(members))
    ]
    for thread in threads:
        thread.start()
    group.coordinate()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results, group.stacked
