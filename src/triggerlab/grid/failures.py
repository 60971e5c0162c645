"""Why a run did not finish, in words every executor shares.

A run fails for its own reasons (a bad config, NaN training: ``run error``) or
because of where it ran: its node died (``node lost``), the scheduler took its
slot (``preempted``), someone cancelled its job (``cancelled``), it ran out of
its time (``time limit``) or of memory (``out of memory``), or its job ended
without a trace of why (``job lost``). Runs are idempotent and continue from
their last checkpoint, so the causes that say nothing about the run itself are
retried, a bounded number of times; a run error or running out of memory would
only happen again.
"""

from __future__ import annotations

RUN_ERROR = "run error"
NODE_LOST = "node lost"
PREEMPTED = "preempted"
CANCELLED = "cancelled"
TIME_LIMIT = "time limit"
OUT_OF_MEMORY = "out of memory"
JOB_LOST = "job lost"

CAUSES = (RUN_ERROR, NODE_LOST, PREEMPTED, CANCELLED, TIME_LIMIT, OUT_OF_MEMORY, JOB_LOST)
RETRIED = frozenset({NODE_LOST, PREEMPTED, CANCELLED, TIME_LIMIT, JOB_LOST})

DEFAULT_RETRIES = 2


def cause_of(result: dict[str, object]) -> str:
    """The cause a failed run's outcome names; a run that raised is a run error."""
    cause = result.get("cause")
    return cause if isinstance(cause, str) and cause in CAUSES else RUN_ERROR


def count_by_cause(causes: dict[str, str]) -> str:
    """``2 run error, 1 node lost``: failures per cause, in the order of ``CAUSES``."""
    counts = {c: sum(1 for v in causes.values() if v == c) for c in CAUSES}
    return ", ".join(f"{n} {c}" for c, n in counts.items() if n)
