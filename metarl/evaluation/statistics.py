"""Summaries of meta-test values: the mean and a Student-t confidence interval over the
``tasks x seeds`` values of one step; a diverged value makes the step NaN, never a number that
ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats


def student_t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom (e.g. 12.706 for
    ``p = 0.975, dof = 1``).

    Raises:
        ValueError: ``p`` outside (0, 1) or ``dof`` below 1.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    return float(scipy.stats.t.ppf(p, dof))


@dataclass(frozen=True)
class Summary:
    """Mean and two-sided confidence interval of n values.

    Attributes:
        mean, std: sample mean and standard deviation (ddof = 1; 0 for one value).
        ci_low, ci_high: ``mean -/+ t_{(1+level)/2, n-1} * std / sqrt(n)`` (the mean itself
            when n = 1: no interval can be estimated from one value).
        n: number of values.
        diverged: how many of them diverged (non-finite actions, observations or rewards);
            when any did, every statistic is NaN: a diverged step never ranks.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int
    diverged: int = 0


def summarize_with_divergence(values: np.ndarray | Sequence[float], level: float = 0.95) -> Summary:
    """:func:`summarize`, except that NaN values (diverged episodes) are counted, not averaged:
    any of them makes the summary NaN with ``diverged`` set."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        return Summary(math.nan, math.nan, math.nan, math.nan, int(x.size), bad)
    return summarize(x, level)


def summarize(values: np.ndarray | Sequence[float], level: float = 0.95) -> Summary:
    """Mean and Student-t ``level`` confidence interval of ``values`` (any shape, flattened).

    Raises:
        ValueError: no values, a non-finite value, or ``level`` outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("summarize needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"summarize got non-finite values: {x[~np.isfinite(x)][:5].tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(mean, 0.0, mean, mean, 1)
    std = float(x.std(ddof=1))
    half = student_t_quantile(0.5 + 0.5 * level, x.size - 1) * std / math.sqrt(x.size)
    return Summary(mean, std, mean - half, mean + half, int(x.size))
