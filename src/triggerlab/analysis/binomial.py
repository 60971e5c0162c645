"""The binomial interval of a cell's test predictions, pooled over its repeats, beside the
interval over repeats.

A share such as the clean accuracy is k correct predictions out of n test images. The
95 % t interval over repeats (``statistics.interval``) measures how much another
training would differ; with two repeats its factor t(0.975, 1) = 12.7 makes it nearly
useless. The Wilson score interval of the predictions pooled over the repeats (sum of k
out of sum of n) measures how precisely the test set pins these models down: it treats
every prediction as independent, so it is the test-set sampling error alone, never the
spread between trainings. Both are shown, each named for what it is.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy import stats

from triggerlab.catalogue.metrics import metric_label

# The summary's count of the test images each share is a fraction of (``data.test_size``
# or ``data.attack_test_size``, the images the attack is meant for: ASR and RA count
# only those). Shares measured on other sets (a defence's, a detector's) have none.
TRIALS = {
    "clean_acc": "test_size",
    "asr_all": "test_size",
    "asr": "attack_test_size",
    "robust_acc": "attack_test_size",
    "bin_acc": "test_size",
    "bin_asr": "test_size",
}
LABEL = "Wilson 95 % interval of the test predictions pooled over the repeats"
WIDTH_GOAL = 0.01  # the half-width the report says how many repeats would reach, for a share


def trials_column(metric: str) -> str | None:
    """The results-table column holding the test images ``metric`` is a share of."""
    if metric.startswith("attack_success_"):  # regression: every triggered test image
        return "test_size"
    return TRIALS.get(metric)


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``successes`` out of ``trials``."""
    ci = stats.binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def pooled_binomial(shares: pd.Series, trials: pd.Series) -> dict[str, float]:
    """``k`` of ``n`` pooled over the runs, their share and its Wilson interval; nan where a
    run's count is unknown (a run written before counts were recorded) or a share is
    missing, so that no interval is made up."""
    frame = pd.DataFrame({"share": shares, "trials": trials})
    nothing = {"k": math.nan, "n": math.nan, "share": math.nan, "low": math.nan, "high": math.nan}
    if frame.empty or frame.isna().to_numpy().any():
        return nothing
    n_each = frame["trials"].astype(float)
    k_each = frame["share"].astype(float) * n_each
    if (n_each < 1).any() or ((k_each - k_each.round()).abs() > 1e-6 * n_each).any():
        return nothing  # not a count of those images: no binomial reading
    k, n = int(k_each.round().sum()), int(n_each.sum())
    low, high = wilson(k, n)
    return {"k": k, "n": n, "share": k / n, "low": low, "high": high}


def repeats_for(std: float, half_width: float, most: int = 10_000) -> int | None:
    """Roughly how many repeats bring the t interval's half-width ``t(0.975, n - 1) * std /
    sqrt(n)`` to ``half_width`` at the spread ``std`` seen; None beyond ``most``."""
    if not std > 0:
        return 2
    for n in range(2, most + 1):
        if float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) <= half_width:
            return n
    return None


def repeats_note(summary: pd.DataFrame, metric: str, goal: float = WIDTH_GOAL) -> str:
    """One sentence: why the interval over repeats is wide, and about how many repeats would
    narrow it to +-``goal`` at the median spread of the cells ('' with one repeat a cell)."""
    if f"{metric}_std" not in summary or summary.empty:
        return ""
    repeats = int(summary["n"].min())
    spread = summary[f"{metric}_std"].dropna()
    if repeats < 2 or spread.empty:
        return ""
    t = float(stats.t.ppf(0.975, repeats - 1))
    std = float(spread.median())
    wide = (
        f"With {repeats} repeats a cell, the interval over repeats is as wide as "
        f"t(0.975, {repeats - 1}) = {t:.2f} times their spread (std / √{repeats})"
    )
    if std == 0:
        return f"{wide}; the repeats of every cell agree exactly here, so it is a point."
    needed = repeats_for(std, goal)
    count = f"about {needed}" if needed is not None else "more than 10,000"
    return (
        f"{wide}: at the median spread of the {metric_label(metric)} over the cells "
        f"(std {std:.2g}), {count} repeats would narrow it to roughly ±{goal:g}."
    )


def binomial_columns(group: pd.DataFrame, metric: str) -> dict[str, Any]:
    """``<metric>_binomial_low``/``_high``/``_n`` of one cell, when its counts are known."""
    column = trials_column(metric)
    if column is None or column not in group:
        return {}
    pooled = pooled_binomial(group[metric], group[column])
    return {
        f"{metric}_binomial_low": pooled["low"],
        f"{metric}_binomial_high": pooled["high"],
        f"{metric}_binomial_n": pooled["n"],
    }
