"""The numpy/scipy twin of :func:`methods.spatial.warp`, as the official evaluators warp.

``warped(x) = moving(x + u(x))`` with ``scipy.ndimage.map_coordinates`` (order 1 for images, order 0 for
labels, ``mode='constant'``, ``cval=0``: samples outside ``[0, n - 1]`` become 0), on ``[X, Y, Z]``
arrays and ``[X, Y, Z, 3]`` (or ``[3, X, Y, Z]``) voxel displacements.

:func:`warp_image` does the same for a moving image on any grid: the displacement (fixed voxel units,
fixed affine ``A_f``) names the world point ``A_f (x + u(x))``, which is voxel ``A_m⁻¹ A_f (x + u(x))``
of a moving image with affine ``A_m`` (``dirbench.native``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

__all__ = ["warp_array", "warp_image"]


def warp_array(moving: np.ndarray, disp: np.ndarray, order: int = 1) -> np.ndarray:
    """Pull ``moving`` ``[X, Y, Z]`` back through ``disp`` (voxel units, on the output grid).

    Returns an array of the displacement's spatial shape and ``moving``'s dtype for ``order=0``
    (labels), float32 otherwise.
    """
    if disp.shape[-1] == 3 and disp.ndim == 4:
        disp = np.moveaxis(disp, -1, 0)
    coords = np.indices(disp.shape[1:], dtype=np.float64) + disp  # float64, as get_fdata gives the evaluators
    out = map_coordinates(moving, coords, order=order, mode="constant", cval=0)
    return out if order == 0 else out.astype(np.float32, copy=False)


def warp_image(moving: np.ndarray, moving_affine: np.ndarray, disp: np.ndarray, fixed_affine: np.ndarray,
               order: int = 1) -> np.ndarray:
    """Pull ``moving`` ``[X', Y', Z']`` (on its own grid ``moving_affine``) onto the displacement's grid.

    ``warped(x) = moving(A_m⁻¹ A_f (x + u(x)))`` for ``disp`` ``u`` ``[X, Y, Z, 3]`` in fixed voxel units with
    affine ``A_f``; with ``A_m = A_f`` this is exactly :func:`warp_array`. Same dtypes as :func:`warp_array`.
    """
    t = np.linalg.solve(np.asarray(moving_affine, np.float64), np.asarray(fixed_affine, np.float64))
    if np.allclose(t, np.eye(4), rtol=0, atol=1e-9):
        return warp_array(moving, disp, order)
    if disp.shape[-1] == 3 and disp.ndim == 4:
        disp = np.moveaxis(disp, -1, 0)
    points = np.indices(disp.shape[1:], dtype=np.float64) + disp
    coords = np.tensordot(t[:3, :3], points, axes=1) + t[:3, 3].reshape(3, 1, 1, 1)
    out = map_coordinates(moving, coords, order=order, mode="constant", cval=0)
    return out if order == 0 else out.astype(np.float32, copy=False)
