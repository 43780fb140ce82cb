"""Metrics against a known answer: end-point error to the true displacement, and inverse consistency (mm).

- :func:`compute_epe`: mean end-point error ``mean_x |S (u(x) - u*(x))|`` over a mask, with ``S`` =
  ``diag(spacing)``: the distance in mm between where the registration and the ground truth send each
  fixed voxel. Needs the true pair displacement ``u*``, which only synthetic data have (the demo data:
  :func:`dirbench.data.demo.true_pair_disp`; a dataset declares it with ``"ground_truth"`` in its
  ``dataset.json``, see :mod:`dirbench.dataset`). The all-zero field ("Initial") gives the mean true
  displacement.
- :func:`compute_ic_error`: mean inverse-consistency error ``mean_x |S (u(x) + v(x + u(x)))|`` over a mask,
  for models that also return the inverse field ``v`` (on the moving grid, moving → fixed): the round trip
  fixed → moving → fixed, ``Φ21(Φ12(x)) − x`` in the notation of :mod:`methods.dp_ic` (``Φ12 = id + u``,
  ``Φ21 = id + v``), i.e. ``methods.spatial.compose(v, u)``. ``v`` is sampled off-grid by trilinear
  interpolation with border clamping (scipy ``map_coordinates(order=1, mode="nearest")``, the same as
  the models' ``grid_sample(padding_mode="border", align_corners=True)``). An exact inverse gives 0 up to
  interpolation error.

Masks: the evaluation uses the fixed brain, ``fixed_seg > 0``. Units: fields in voxels of one shared grid
(fixed and moving images on the same grid, as in every dataset here), ``spacing`` in mm.
No public benchmark reports EPE on these data; the metric is ours (issue 12), the definition is standard
(e.g. the end-point error of optical flow, Baker et al., IJCV 2011).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from dirbench.metrics.base import MetricValue, PairData
from dirbench.metrics.utils import as_field

__all__ = ["brain_mask", "compute_epe", "compute_ic_error", "pair_epe", "pair_ic_error"]


def _mask_index(mask: np.ndarray | None, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Indices ``(i, j, k)`` of the voxels to average over: the mask's nonzero voxels, or every voxel."""
    if mask is None:
        return np.nonzero(np.ones(shape, bool))
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} differs from the field's {tuple(shape)}")
    return np.nonzero(mask)


def _mean_norm_mm(vectors: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean Euclidean norm (mm) of voxel-unit vectors ``[N, 3]``; NaN for none."""
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {tuple(spacing)}")
    if not len(vectors):
        return math.nan
    return float(np.sqrt(np.sum((vectors * np.asarray(spacing, np.float64)) ** 2, axis=1)).mean())


def compute_epe(
    disp: np.ndarray,
    true_disp: np.ndarray,
    mask: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> float:
    """Mean end-point error (mm) between a displacement and the true one.

    Args:
        disp: ``[X, Y, Z, 3]`` (or ``[3, X, Y, Z]``) voxel displacement on the fixed grid.
        true_disp: the ground truth, same layout and grid.
        mask: ``[X, Y, Z]`` bool (e.g. the fixed brain) or None (every voxel).
        spacing: voxel size in mm.

    Returns:
        ``mean_{x in mask} |diag(spacing) (disp(x) - true_disp(x))|`` in mm (float64 arithmetic); NaN for
        an empty mask.
    """
    disp, true_disp = as_field(disp), as_field(true_disp)
    if disp.shape != true_disp.shape:
        raise ValueError(f"displacement {disp.shape[:3]} and true displacement {true_disp.shape[:3]} grids differ")
    index = _mask_index(mask, disp.shape[:3])
    diff = disp[index].astype(np.float64) - true_disp[index].astype(np.float64)
    return _mean_norm_mm(diff, spacing)


def compute_ic_error(
    disp: np.ndarray,
    inverse: np.ndarray,
    mask: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> float:
    """Mean inverse-consistency error (mm): ``mean_{x in mask} |diag(spacing) (u(x) + v(x + u(x)))|``.

    Args:
        disp: ``u``, ``[X, Y, Z, 3]`` voxel displacement on the fixed grid (fixed → moving coordinates).
        inverse: ``v``, ``[X', Y', Z', 3]`` voxel displacement on the moving grid (moving → fixed), e.g.
            ``RegistrationOutput.inverse`` of an inverse-consistent model.
        mask: ``[X, Y, Z]`` bool on the fixed grid or None (every voxel).
        spacing: voxel size in mm.

    ``v`` is interpolated trilinearly at ``x + u(x)`` with border clamping (see the module docstring).
    NaN for an empty mask.
    """
    disp, inverse = as_field(disp), as_field(inverse)
    index = _mask_index(mask, disp.shape[:3])
    u = disp[index].astype(np.float64)  # [N, 3]
    coords = np.stack(index).astype(np.float64) + u.T  # x + u(x), [3, N] moving-grid voxels
    v = np.stack(
        [ndi.map_coordinates(inverse[..., c].astype(np.float64), coords, order=1, mode="nearest") for c in range(3)],
        axis=-1,
    )
    return _mean_norm_mm(u + v, spacing)


def brain_mask(pair: PairData) -> np.ndarray:
    """The mask of the ground-truth metrics: ``fixed_seg > 0``, computed once per pair."""
    assert pair.fixed_seg is not None
    fixed_seg = pair.fixed_seg
    return pair.shared("brain_mask", lambda: np.asarray(fixed_seg) > 0)


def pair_epe(pair: PairData) -> MetricValue:
    """Registry adapter: :func:`compute_epe` inside the fixed brain."""
    assert pair.true_disp is not None
    return MetricValue(compute_epe(pair.disp, pair.true_disp, brain_mask(pair), pair.spacing))


def pair_ic_error(pair: PairData) -> MetricValue:
    """Registry adapter: :func:`compute_ic_error` inside the fixed brain."""
    assert pair.inverse_disp is not None
    return MetricValue(compute_ic_error(pair.disp, pair.inverse_disp, brain_mask(pair), pair.spacing))
