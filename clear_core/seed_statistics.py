"""Seed noise: the mean of a metric over training seeds and its two-sided 95 % t interval.

The seeds vary the model's randomness only (initialisation, negative sampling, dropout); the
test users are the same in every run, so an interval says how sure a figure is on these files,
not on the dataset's population at large. The evaluation protocol reports every figure over at
least five seeds for that reason: one run per configuration cannot tell a difference from seed
noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# Two-sided 95 % quantiles of Student's t for 1-20 degrees of freedom (beyond that, the
# Cornish-Fisher expansion below is within 0.001 of the exact value).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` (per-seed figures, or paired differences)
    and its 95 % t interval; the interval is NaN with fewer than two values."""
    if not values:
        raise ValueError("mean_interval needs at least one value")
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """One metric over seeds: ``n``, ``mean``, ``std`` (sample; 0 for one seed) and the 95 %
    interval's ``low`` and ``high`` (NaN for one seed)."""
    mean, low, high = mean_interval(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": float(len(values)), "mean": mean, "std": std, "low": low, "high": high}
