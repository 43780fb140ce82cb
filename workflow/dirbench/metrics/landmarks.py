"""LUMIR landmark TRE (``spec/evaluation-and-data.md`` §4): centroid distances of landmark label volumes, in mm.

As the LUMIR evaluator's ``calc_TRE``: the moving landmark volume is warped by nearest neighbour
(:func:`~dirbench.metrics.warp_labels`); for every id of ``np.unique(fixed)[1:]`` the centroids (mean voxel
index) in the fixed and the warped volume are compared, scaled by the voxel spacing. A landmark that
vanished after warping gives NaN, and so does the case mean (the official code does not skip it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dirbench.metrics.base import MetricValue, PairData
from dirbench.metrics.labels import warp_labels

__all__ = ["compute_tre", "landmark_errors", "pair_tre"]


def _centroids(volume: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mean voxel index ``[K, 3]`` of every id (NaN where absent), from the nonzero voxels only."""
    nz = np.nonzero(volume)
    values = volume[nz]
    pos = np.minimum(np.searchsorted(ids, values), max(len(ids) - 1, 0))
    keep = ids[pos] == values if len(ids) else np.zeros(len(values), bool)
    pos = pos[keep]
    counts = np.bincount(pos, minlength=len(ids)).astype(np.float64)
    sums = np.stack([np.bincount(pos, weights=c[keep].astype(float), minlength=len(ids)) for c in nz], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _case_mean(errors: np.ndarray) -> float:
    """The plain mean over landmarks (NaN propagates; NaN for no landmark)."""
    return float(errors.mean()) if errors.size else math.nan


def landmark_errors(
    fixed_landmarks: np.ndarray,
    moving_landmarks: np.ndarray,
    disp: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """LUMIR ``calc_TRE`` per landmark: ids ``[K]`` and centroid distances ``[K]`` in mm.

    Landmarks are label volumes ``[X, Y, Z]`` (one id per landmark, 0 background). The moving volume
    is warped by nearest neighbour (:func:`warp_labels`); for every id of ``np.unique(fixed)[1:]``
    the centroids (mean voxel index) in the fixed and the warped volume are compared, scaled by
    ``spacing``. A landmark that vanished after warping gives NaN.
    """
    fixed_landmarks = np.asarray(fixed_landmarks)
    warped = warp_labels(np.asarray(moving_landmarks), disp, threads)
    ids = np.unique(fixed_landmarks)[1:]
    diff = _centroids(warped, ids) - _centroids(fixed_landmarks, ids)
    return ids, np.sqrt(np.sum((diff * np.asarray(spacing, np.float64)) ** 2, axis=1))


def compute_tre(
    fixed_landmarks: np.ndarray,
    moving_landmarks: np.ndarray,
    disp: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> float:
    """LUMIR case TRE (mm): the plain mean of :func:`landmark_errors` (NaN if a landmark vanished)."""
    return _case_mean(landmark_errors(fixed_landmarks, moving_landmarks, disp, spacing)[1])


def pair_tre(pair: PairData) -> MetricValue:
    """Registry adapter: per-landmark TRE (mm) of the pair and its plain mean."""
    assert pair.fixed_landmarks is not None and pair.moving_landmarks is not None
    ids, errors = landmark_errors(pair.fixed_landmarks, pair.moving_landmarks, pair.disp, pair.spacing, pair.threads)
    return MetricValue(_case_mean(errors), "landmark", tuple(int(i) for i in ids), errors)
