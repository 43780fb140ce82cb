"""Paired significance tests behind the tables' bold / underline marks.

Liu, Ruan & Sheng (MIDL 2025), Table 1, print the best method of each column in bold and underline the
ones that are "competitively close" without saying how closeness was decided. DIRBench's rule: a method
is underlined when a two-sided paired Wilcoxon signed-rank test against the best method, over the pairs
both were evaluated on (matched by ``(fixed, moving)``), is not significant at α = 0.05 after Holm's
correction across all the methods compared with the best in that column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

__all__ = ["ALPHA", "column_marks", "holm", "paired_wilcoxon"]

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


def column_marks(
    cases: Mapping[str, pd.Series],
    means: Mapping[str, float],
    higher_is_better: bool,
    underline: bool = True,
    alpha: float = ALPHA,
) -> dict[str, str]:
    """Mark the cells of one table column: ``"best"`` (bold), ``"close"`` (underline) or ``""``.

    Args:
        cases: method → per-case values (a Series indexed by ``(fixed, moving)``); only the methods
            that compete for the marks (Initial excluded by the caller).
        means: method → the column's mean; NaN means are never marked.
        higher_is_better: Dice (True) or a distance / irregularity measure (False).
        underline: apply the underline rule (Holm-corrected paired Wilcoxon vs the best, see module doc).
        alpha: significance level.

    Every method whose mean equals the best mean is bold; the others are tested against the first of
    them (in ``means`` order) on the common pairs.
    """
    marks = {m: "" for m in means}
    valid = {m: v for m, v in means.items() if not np.isnan(v)}
    if not valid:
        return marks
    best_value = max(valid.values()) if higher_is_better else min(valid.values())
    best = [m for m, v in valid.items() if v == best_value]
    for m in best:
        marks[m] = "best"
    if not underline:
        return marks
    others = [m for m in valid if m not in best]
    ref = cases[best[0]]
    pvalues = []
    for m in others:
        common = ref.index.intersection(cases[m].index)
        pvalues.append(
            paired_wilcoxon(ref.loc[common].to_numpy(), cases[m].loc[common].to_numpy())
            if len(common)
            else np.nan
        )
    for m, p_adj in zip(others, holm(pvalues), strict=True):
        if p_adj > alpha:
            marks[m] = "close"
    return marks
