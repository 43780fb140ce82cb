"""Dice overlap per label, with the Learn2Reg / LUMIR empty-label rule (``spec/evaluation-and-data.md`` §1).

NaN where a label is absent from the fixed *or* the original moving segmentation; 0 where it is present in
both but vanished after warping. The case score is the ``nanmean`` over labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dirbench.metrics.base import MetricValue, PairData
from dirbench.metrics.labels import check_segs, label_counts, pair_label_counts
from dirbench.metrics.utils import nanmean

__all__ = ["compute_dice", "dice_from_counts", "pair_dice"]


def dice_from_counts(n_fixed: np.ndarray, n_moving: np.ndarray, n_warped: np.ndarray, inter: np.ndarray) -> np.ndarray:
    """Dice ``2|F ∩ W| / (|F| + |W|)`` per label from :func:`~dirbench.metrics.labels.label_counts`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 2.0 * inter / (n_fixed + n_warped)
    out[(n_fixed == 0) | (n_moving == 0)] = np.nan
    return out.astype(np.float64)


def compute_dice(
    fixed_seg: np.ndarray, moving_seg: np.ndarray, warped_seg: np.ndarray, labels: Sequence[int]
) -> np.ndarray:
    """Per-label Dice ``2|F ∩ W| / (|F| + |W|)``, float64 ``[L]``, with the official empty-label rule.

    Args:
        fixed_seg, moving_seg, warped_seg: ``[X, Y, Z]`` integer label maps (``warped_seg`` from
            :func:`~dirbench.metrics.warp_labels`; ``moving_seg`` only decides which labels count).
        labels: label ids.

    Returns:
        NaN where a label is absent from ``fixed_seg`` or from the *original* ``moving_seg``; 0 where
        it is present in both but vanished from ``warped_seg``. The case score is ``np.nanmean``.
    """
    fixed_seg, moving_seg, warped_seg = map(np.asarray, (fixed_seg, moving_seg, warped_seg))
    check_segs(fixed_seg, moving_seg, warped_seg)
    return dice_from_counts(*label_counts(fixed_seg, moving_seg, warped_seg, labels))


def pair_dice(pair: PairData) -> MetricValue:
    """Registry adapter: per-label Dice of the pair and its ``nanmean``."""
    per_label = dice_from_counts(*pair_label_counts(pair)[1])
    return MetricValue(nanmean(per_label), "label", tuple(pair.labels), per_label)
