"""Paired significance tests behind the tables' bold / underline marks.

Liu, Ruan & Sheng (MIDL 2025), Table 1, print the best method of each column in bold and underline the
ones that are "competitively close" without saying how closeness was decided. DIRBench's rule: a method
is underlined when a two-sided paired Wilcoxon signed-rank test against the best method, over the pairs
both were evaluated on (matched by ``(fixed, moving)``), is not significant at α = 0.05 after Holm's
correction across all the methods compared with the best in that column.

Small samples: the smallest two-sided p-value the exact test can give with n non-zero differences is
2 / 2^n (all of one sign), and Holm multiplies the smallest of m p-values by m, so nothing can be significant
until m · 2^(1 − n) ≤ α (:func:`min_pairs`; n = 6 for one comparison at α = 0.05, n = 7 for two or three).
Below that every method would be "not significantly different" by construction, so :func:`column_marks`
gives no underline at all (scipy's normal approximation, used when there are ties, could otherwise even
reach α below it). Methods whose mean is not finite (an HD95 of ``inf``) are never marked and are not
compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

__all__ = ["ALPHA", "ColumnMarks", "column_marks", "holm", "min_pairs", "paired_wilcoxon"]

#: Significance level of the underline rule.
ALPHA = 0.05


def _finite_ranks(d: np.ndarray) -> np.ndarray:
    """Replace ±inf differences by ±(a value above every finite |difference|): the signed ranks, all the
    Wilcoxon test uses, stay the same (infinite differences tie with each other and rank highest)."""
    finite = np.abs(d[np.isfinite(d)])
    big = 2.0 * (finite.max() if finite.size else 0.0) + 1.0
    return np.where(np.isposinf(d), big, np.where(np.isneginf(d), -big, d))


def paired_wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of ``a - b`` (paired samples, same order).

    Pairs with a NaN on either side are dropped. Infinite values (an HD95 of ``inf``) count as larger
    than every finite value; two equal infinities are a zero difference. Zero differences are dropped
    (Wilcoxon's treatment, scipy's ``zero_method="wilcox"``); when nothing is left (identical samples)
    the p-value is 1. scipy chooses the exact null distribution for small samples without ties and the
    normal approximation otherwise.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and equally long, got shapes {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    both_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    with np.errstate(invalid="ignore"):
        d = np.where(both_inf, 0.0, a - b)
    d = _finite_ranks(d)
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order (Holm 1979).

    With the m p-values sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted value of p_(i) is
    ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``. A hypothesis is rejected at level α when its adjusted
    p-value is ≤ α. NaN entries stay NaN and do not count in m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def min_pairs(alpha: float = ALPHA, comparisons: int = 1) -> int:
    """The fewest pairs n with which a two-sided exact Wilcoxon signed-rank test, Holm-corrected over
    ``comparisons`` tests, can reach ``alpha``: the smallest n with ``comparisons · 2^(1 − n) ≤ alpha``.

    2^(1 − n) is the exact test's smallest two-sided p-value (every one of the n differences of one sign);
    Holm's first step multiplies the smallest p-value by the number of comparisons, and nothing is rejected
    unless that step is. ``min_pairs(0.05) == 6``, ``min_pairs(0.05, 3) == 7``, ``min_pairs(0.05, 13) == 10``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = 1
    while max(1, comparisons) * 2.0 ** (1 - n) > alpha:
        n += 1
    return n


@dataclass(frozen=True)
class ColumnMarks:
    """The marks of one table column and the facts behind its underline rule.

    Attributes:
        marks: method → ``"best"`` (bold), ``"close"`` (underline) or ``""``.
        comparisons: methods tested against the best (the Holm family size m).
        pairs: the fewest pairs a tested method shares with the best (None when nothing was tested).
        needed: :func:`min_pairs` for ``comparisons`` at the column's α.
    """

    marks: dict[str, str]
    comparisons: int = 0
    pairs: int | None = None
    needed: int = 0

    @property
    def underlined(self) -> bool:
        """Whether the underline rule was applied (False: too few pairs to reach α, or nothing to test)."""
        return self.pairs is not None and self.pairs >= self.needed


def column_marks(
    cases: Mapping[str, pd.Series],
    means: Mapping[str, float],
    higher_is_better: bool,
    underline: bool = True,
    alpha: float = ALPHA,
) -> ColumnMarks:
    """Mark the cells of one table column: ``"best"`` (bold), ``"close"`` (underline) or ``""``.

    Args:
        cases: method → per-case values (a Series indexed by ``(fixed, moving)``); only the methods
            that compete for the marks (Initial excluded by the caller).
        means: method → the column's mean; NaN or infinite means are never marked nor compared.
        higher_is_better: Dice (True) or a distance / irregularity measure (False).
        underline: apply the underline rule (Holm-corrected paired Wilcoxon vs the best, see module doc).
        alpha: significance level.

    Every method whose mean equals the best mean is bold; the others are tested against the first of
    them (in ``means`` order) on the common pairs, unless the fewest common pairs are below
    :func:`min_pairs` for that many comparisons (then nothing is underlined).
    """
    marks = {m: "" for m in means}
    valid = {m: v for m, v in means.items() if math.isfinite(v)}
    if not valid:
        return ColumnMarks(marks)
    best_value = max(valid.values()) if higher_is_better else min(valid.values())
    best = [m for m, v in valid.items() if v == best_value]
    for m in best:
        marks[m] = "best"
    others = [m for m in valid if m not in best]
    if not underline or not others:
        return ColumnMarks(marks)
    ref = cases[best[0]]
    commons = [ref.index.intersection(cases[m].index) for m in others]
    result = ColumnMarks(marks, len(others), min(len(c) for c in commons), min_pairs(alpha, len(others)))
    if not result.underlined:
        return result
    pvalues = [
        paired_wilcoxon(ref.loc[common].to_numpy(), cases[m].loc[common].to_numpy()) if len(common) else np.nan
        for m, common in zip(others, commons, strict=True)
    ]
    for m, p_adj in zip(others, holm(pvalues), strict=True):
        if p_adj > alpha:
            marks[m] = "close"
    return result
