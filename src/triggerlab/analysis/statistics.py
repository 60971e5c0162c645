"""Statistics over repeats: intervals that respect a metric's bounds, and tests between cells.

A share bounded in [0, 1] (ASR, accuracy) gets its 95 % t interval on the
logit scale, mapped back, so the interval stays inside [0, 1] however few the
repeats; other metrics get the plain t interval. Welch's t-tests compare cells,
and every family of tests gets Holm and Benjamini-Hochberg adjusted p-values
beside the raw ones.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.special
import yaml
from scipy import stats

from triggerlab.catalogue.metrics import is_fraction, metric_columns
from triggerlab.config.yaml_input import parse_yaml
from triggerlab.errors import ArgumentError, ConfigError


def table_value(value: Any) -> Any:
    """Table cells hold scalars: lists and mappings (positions, colours) become their YAML text."""
    if isinstance(value, list | dict | tuple):
        return yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return value


LOGIT_CLIP = 1e-3  # shares of exactly 0 or 1 enter the logit as 0.001 or 0.999


def interval(values: pd.Series, metric: str | None = None) -> dict[str, float]:
    """Mean, sample std, n and a two-sided 95 % interval of the finite values.

    For a share bounded in [0, 1] (``metrics.is_fraction``) the t interval is taken on
    the logit scale and mapped back, so it stays inside [0, 1]; other metrics get the
    plain t interval ``mean +- t(0.975, n - 1) * std / sqrt(n)``. One value: no interval.
    """
    clean = values.dropna().astype(float).to_numpy()
    n = int(clean.size)
    mean = float(clean.mean()) if n else math.nan
    std = float(clean.std(ddof=1)) if n > 1 else math.nan
    low = high = math.nan
    if n > 1:
        t = float(stats.t.ppf(0.975, n - 1))
        if metric is not None and is_fraction(metric):
            logits = scipy.special.logit(np.clip(clean, LOGIT_CLIP, 1 - LOGIT_CLIP))
            centre, spread = logits.mean(), logits.std(ddof=1)
            half = t * spread / math.sqrt(n)
            if spread == 0:
                low = high = mean
            else:
                low, high = (float(scipy.special.expit(centre + d)) for d in (-half, half))
                # shares beyond the clip (0.9997 next to 1.0) can leave the mean outside
                low, high = min(low, mean), max(high, mean)
        else:
            half = t * std / math.sqrt(n)
            low, high = mean - half, mean + half
    return {"mean": mean, "std": std, "n": n, "ci_low": low, "ci_high": high}


def parse_comparison(text: str, varied: list[str]) -> tuple[str, Any, Any]:
    """``key=a,b`` -> (key, a, b), values read as YAML like every other setting."""
    key, sep, values = text.partition("=")
    parts = values.split(",")
    if not sep or len(parts) != 2:
        raise ArgumentError("compare", "expected KEY=A,B, e.g. trigger.size=3,5", repr(text))
    if key not in varied:
        raise ArgumentError(
            "compare", f"{key!r} is not varied in this grid ({', '.join(varied)})", repr(text)
        )
    try:
        a, b = (table_value(parse_yaml(p, "a compared value")) for p in parts)
    except ConfigError as exc:
        raise ArgumentError("compare", str(exc), repr(text)) from None
    return key, a, b


def compare(table: pd.DataFrame, varied: list[str], key: str, a: Any, b: Any) -> pd.DataFrame:
    """Welch t-tests between cells with ``key = a`` and ``key = b``, other varied keys equal."""
    runs = table[(table["role"] == "grid") & (table["status"] == "complete")]
    others = [k for k in varied if k != key]
    metrics = metric_columns(runs)
    rows = []
    groups = runs.groupby(others, sort=False, dropna=False) if others else [((), runs)]
    for other_key, group in groups:
        values = other_key if isinstance(other_key, tuple) else (other_key,)
        left, right = group[group[key] == a], group[group[key] == b]
        if left.empty or right.empty:
            continue
        for metric in metrics:
            x, y = left[metric].dropna().astype(float), right[metric].dropna().astype(float)
            with warnings.catch_warnings():
                # Identical repeats (e.g. ASR 0 everywhere) make scipy warn; t is then nan or inf.
                warnings.simplefilter("ignore", RuntimeWarning)
                test = stats.ttest_ind(x, y, equal_var=False) if len(x) > 1 and len(y) > 1 else None
            row = dict(zip(others, values, strict=True))
            row.update(
                metric=metric,
                key=key,
                a=a,
                b=b,
                mean_a=float(x.mean()),
                mean_b=float(y.mean()),
                n_a=len(x),
                n_b=len(y),
                t=float(test.statistic) if test else math.nan,
                df=float(test.df) if test else math.nan,
                p=float(test.pvalue) if test else math.nan,
            )
            rows.append(row)
    if not rows:
        raise ArgumentError(
            "compare", "no cells have both values with finished runs", f"{key}={a},{b}"
        )
    return adjust_p_values(pd.DataFrame(rows))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values (family-wise error rate)."""
    order = np.argsort(p)
    ranked = p[order] * (p.size - np.arange(p.size))
    adjusted = np.minimum(np.maximum.accumulate(ranked), 1.0)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def adjust_p_values(frame: pd.DataFrame) -> pd.DataFrame:
    """``p_holm`` and ``p_bh`` (Benjamini-Hochberg) over every test in ``frame``, beside ``p``;
    tests without a p-value (fewer than two runs a side) stay out of the family."""
    frame = frame.copy()
    frame["p_holm"] = math.nan
    frame["p_bh"] = math.nan
    known = frame["p"].notna().to_numpy()
    if known.any():
        p = frame.loc[known, "p"].to_numpy(dtype=float)
        frame.loc[known, "p_holm"] = holm(p)
        frame.loc[known, "p_bh"] = stats.false_discovery_control(p, method="bh")
    return frame
