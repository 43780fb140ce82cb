"""Paired Wilcoxon + Holm (dirbench.stats): hand-computed Holm, exact-enumeration Wilcoxon, marks."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from dirbench.stats import column_marks, holm, min_pairs, paired_wilcoxon
from scipy.stats import wilcoxon


def test_holm_hand_computed() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_nan() -> None:
    # m = 2 valid values: 0.3·2 = 0.6, 0.7·1 → max(0.6, 0.7) = 0.7; 0.6·2 would be 1.2 → 1
    out = holm([0.7, np.nan, 0.3])
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.7, 0.6])
    np.testing.assert_allclose(holm([0.6, 0.9]), [1.0, 1.0])
    assert holm([]).shape == (0,)


def _exact_signed_rank_p(d: np.ndarray) -> float:
    """Two-sided exact p of the signed-rank statistic by enumerating all 2^n sign patterns (no ties)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w = ranks[d > 0].sum()
    null = np.array(
        [
            sum(r for r, s in zip(ranks, signs, strict=True) if s)
            for signs in itertools.product([0, 1], repeat=len(d))
        ]
    )
    return min(1.0, 2 * min(np.mean(null <= w), np.mean(null >= w)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_matches_exact_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.8, 0.02, 9)
    b = a - rng.normal(0.01, 0.01, 9)
    assert paired_wilcoxon(a, b) == pytest.approx(_exact_signed_rank_p(a - b), rel=1e-12)


def test_wilcoxon_identical_and_nan() -> None:
    a = np.array([0.7, 0.8, 0.9, 0.75])
    assert paired_wilcoxon(a, a) == 1.0
    rng = np.random.default_rng(3)
    x, y = rng.random(12), rng.random(12)
    x_nan = x.copy()
    x_nan[4] = np.nan
    assert paired_wilcoxon(x_nan, y) == paired_wilcoxon(np.delete(x, 4), np.delete(y, 4))


def test_wilcoxon_inf_ranks_highest() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(2, 0.3, 10), rng.normal(2, 0.3, 10)
    x_inf = x.copy()
    x_inf[2] = np.inf  # counts as the largest |difference|, like any value above all others
    x_big = x.copy()
    x_big[2] = 1e6
    assert paired_wilcoxon(x_inf, y) == paired_wilcoxon(x_big, y)
    y_inf = y.copy()
    y_inf[2] = np.inf  # inf vs inf: a zero difference, dropped
    assert paired_wilcoxon(x_inf, y_inf) == paired_wilcoxon(np.delete(x, 2), np.delete(y, 2))


def _series(values: np.ndarray) -> pd.Series:
    index = pd.MultiIndex.from_tuples([(f"{i:04d}", f"{i + 1:04d}") for i in range(len(values))])
    return pd.Series(values, index=index)


def test_column_marks_best_close_worse() -> None:
    rng = np.random.default_rng(5)
    n = 30
    best = rng.normal(0.82, 0.02, n)
    # noise-level partner: alternating signs with rank sums almost balanced, mean slightly lower
    steps = 1e-4 * (np.arange(n) // 2 + 1) + np.where(np.arange(n) % 2 == 0, 0.0, 1e-6)
    close = best + np.where(np.arange(n) % 2 == 0, 1.0, -1.0) * steps
    worse = best - 0.05 + rng.normal(0, 0.005, n)
    cases = {"a": _series(best), "b": _series(close), "c": _series(worse)}
    means = {k: float(v.mean()) for k, v in cases.items()}
    assert means["b"] < means["a"]
    result = column_marks(cases, means, higher_is_better=True)
    assert result.marks == {"a": "best", "b": "close", "c": ""}
    assert (result.comparisons, result.pairs, result.needed, result.underlined) == (2, 30, 7, True)
    assert column_marks(cases, means, higher_is_better=True, underline=False).marks == {
        "a": "best",
        "b": "",
        "c": "",
    }
    # lower-is-better: the worst Dice series becomes the best distance
    assert column_marks(cases, means, higher_is_better=False).marks == {"a": "", "b": "", "c": "best"}


def test_column_marks_only_common_pairs_and_nan_means() -> None:
    a = _series(np.linspace(0.8, 0.9, 12))
    b = _series(np.linspace(0.8, 0.9, 12) - np.linspace(0.01, 0.02, 12)).iloc[6:]  # half the pairs only
    marks = column_marks({"a": a, "b": b, "c": a}, {"a": 0.85, "b": 0.84, "c": np.nan}, higher_is_better=True)
    # 6 common pairs, all differences positive and distinct: exact p = 2/2^6 = 0.03125 < 0.05 → not close
    assert marks.marks == {"a": "best", "b": "", "c": ""} and marks.underlined
    assert paired_wilcoxon(a.loc[b.index].to_numpy(), b.to_numpy()) == pytest.approx(2 / 64)


@pytest.mark.parametrize("comparisons", [1, 2, 3, 4, 10, 13])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_min_pairs_is_where_the_exact_test_first_reaches_alpha(alpha: float, comparisons: int) -> None:
    """Independent check with scipy's exact test: all n differences of one sign give its smallest p-value;
    Holm's first step multiplies it by the number of comparisons."""

    def smallest_adjusted_p(n: int) -> float:
        return comparisons * wilcoxon(np.arange(1.0, n + 1), method="exact").pvalue

    n = min_pairs(alpha, comparisons)
    assert smallest_adjusted_p(n) <= alpha < smallest_adjusted_p(n - 1)


def test_min_pairs_known_values() -> None:
    assert [min_pairs(0.05, m) for m in (1, 2, 3, 4, 13)] == [6, 7, 7, 8, 10]
    with pytest.raises(ValueError, match="alpha"):
        min_pairs(1.5)


def test_column_marks_infinite_means_are_never_marked_nor_compared() -> None:
    rng = np.random.default_rng(6)
    best = rng.normal(2.0, 0.2, 10)
    inf_case = best + rng.normal(0, 0.01, 10)
    inf_case[2] = np.inf
    result = column_marks(
        {"a": _series(best), "b": _series(inf_case)}, {"a": float(best.mean()), "b": np.inf}, higher_is_better=False
    )
    assert result.marks == {"a": "best", "b": ""} and result.comparisons == 0


def test_column_marks_below_min_pairs_underline_nothing() -> None:
    """n = 5 < 6: even identical-looking methods are not underlined (no test could say they differ)."""
    a = _series(np.array([0.80, 0.81, 0.82, 0.83, 0.84]))
    b = _series(np.array([0.80, 0.81, 0.82, 0.83, 0.839]))
    result = column_marks({"a": a, "b": b}, {"a": float(a.mean()), "b": float(b.mean())}, higher_is_better=True)
    assert paired_wilcoxon(a.to_numpy(), b.to_numpy()) > 0.05  # the old rule underlined b
    assert result.marks == {"a": "best", "b": ""}
    assert (result.pairs, result.needed, result.underlined) == (5, 6, False)
