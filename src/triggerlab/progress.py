"""How long work reports how far it has got, without printing: the caller decides how to show it.

Library calls that take a while accept ``progress: Reporter | None`` and call it
with an ``Update`` as they go; the command line turns updates into progress
bars on a terminal and into one line per milestone (an epoch, a finished run)
in a log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Update:
    stage: str  # what is progressing: "training", "grid", "rendering faces", ...
    done: int
    total: int
    note: str = ""  # the latest result, e.g. "epoch 3/40  loss 0.41  CA 0.95"
    milestone: bool = False  # a step worth a line of its own in a log


Reporter = Callable[[Update], None]


def report(progress: Reporter | None, update: Update) -> None:
    if progress is not None:
        progress(update)


_AMBIENT: ContextVar[Reporter | None] = ContextVar("triggerlab_progress", default=None)


@contextmanager
def reporting(progress: Reporter | None) -> Iterator[None]:
    """Let work deep inside a call (rendering faces inside a dataset loader) report to
    ``progress`` without every function between passing it down."""
    token = _AMBIENT.set(progress)
    try:
        yield
    finally:
        _AMBIENT.reset(token)


def ambient() -> Reporter | None:
    """The reporter set by the innermost ``reporting`` block, if any."""
    return _AMBIENT.get()
