"""The numpy/scipy twin of :func:`methods.spatial.warp`, as the official evaluators warp.

``warped(x) = moving(x + u(x))`` with ``scipy.ndimage.map_coordinates`` (order 1 for images, order 0 for
labels, ``mode='constant'``, ``cval=0``: samples outside ``[0, n - 1]`` become 0), on ``[X, Y, Z]``
arrays and ``[X, Y, Z, 3]`` (or ``[3, X, Y, Z]``) voxel displacements.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

__all__ = ["warp_array"]


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
