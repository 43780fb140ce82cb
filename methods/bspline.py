"""Cubic B-spline control-point upsampling (no prefilter), as used by SITReg and DP-ConvIC.

SITReg (Honkamaa & Marttinen, "SITReg: Multi-resolution architecture for symmetric, inverse consistent, and
topology preserving image registration", MELBA 2024) predicts, at every pyramid level ``k``, a grid of cubic
B-spline *control points* on the level's grid and samples the spline on the full-resolution grid
(composable-mapping ``CubicSplineSampler(prefilter=False)``). The DP-ConvIC decoder of Liu, Ruan & Sheng
(MIDL 2025) reuses that machinery.

Grid alignment ("full-voxel" / ``align_corners=False`` reference, composable-mapping ``reference=Start()``):
a level with upsampling factor ``s`` has its voxel ``i`` centred at the full-resolution voxel coordinate
``X(i) = (i + 0.5) · s − 0.5``; i.e. the first *edges* of the two grids coincide and a level voxel covers
exactly ``s`` full-resolution voxels. Conversely, full-resolution voxel ``x`` sits at the control-grid
coordinate ``t(x) = (x + 0.5) / s − 0.5``. The control grid may be larger than ``ceil(N / s)`` would need
(SITReg's "ceil" shapes); the output is cropped to the requested size from the start.

The spline is ``f(x) = Σ_i c_i · β³(t(x) − i)`` (tensor product over the axes), with the uniform cubic
B-spline ``β³`` (support ``(−2, 2)``) and the control points replicated beyond the border (the samplers'
``extrapolation_mode="border"``). Without prefiltering the spline does not interpolate the control points,
but it reproduces constant and linear functions of ``i`` exactly away from the border.

Units: the values are returned as they are (same units as the control points). A control-point
*displacement* given in level voxels becomes a full-resolution voxel displacement after multiplying the
result by ``s`` — the caller does that.

Implementation: one transposed 1-D convolution per axis with stride ``s`` (kernel: the spline sampled at
the ``4s`` full-resolution offsets it covers), applied separably to the replicate-padded grid, then a crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["bspline_kernel", "bspline_upsample", "cubic_bspline"]

#: Control points replicated beyond each border; enough for every factor (β³ reaches 2 control points out).
_PAD = 2


def cubic_bspline(t: torch.Tensor) -> torch.Tensor:
    """The uniform cubic B-spline basis ``β³(t)``: ``2/3 − t² + |t|³/2`` on ``|t| ≤ 1``, ``(2 − |t|)³/6``
    on ``1 < |t| < 2``, 0 elsewhere (any shape, elementwise)."""
    a = t.abs()
    inner = 2.0 / 3.0 - a**2 + 0.5 * a**3
    outer = (2.0 - a).clamp(min=0.0) ** 3 / 6.0
    return torch.where(a <= 1.0, inner, outer)


def bspline_kernel(factor: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, int]:
    """1-D transposed-convolution kernel for upsampling factor ``factor``.

    Returns ``(w, d0)``: ``w[j] = β³((d + 0.5 − s/2) / s)`` for the full-resolution offsets
    ``d = x − s·i = d0 + j`` at which control point ``i`` contributes to voxel ``x`` (zero taps trimmed).
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    s = int(factor)
    d = torch.arange(-2 * s, 3 * s + 1, dtype=torch.float64)  # covers (−1.5s − 0.5, 2.5s − 0.5)
    w = cubic_bspline((d + 0.5 - 0.5 * s) / s)
    nonzero = torch.nonzero(w > 0).flatten()
    first, last = int(nonzero[0]), int(nonzero[-1])
    return w[first : last + 1].to(dtype), int(d[first])


def bspline_upsample(control: torch.Tensor, factor: int, size: Sequence[int] | None = None) -> torch.Tensor:
    """Sample the cubic B-spline with control points ``control`` on the ``factor``-times finer grid.

    Args:
        control: ``[B, C, n_1, …, n_D]`` control points (``D`` = 2 or 3) on the coarse grid.
        factor: integer upsampling factor ``s`` (``2^k`` for pyramid level ``k``; 1 = same grid, where the
            spline still smooths with the taps ``(1, 4, 1) / 6``).
        size: output spatial size ``(N_1, …, N_D)``; default ``n_d · s``. Each ``N_d`` must lie in
            ``((n_d − 1)·s, n_d·s]`` so that the control grid covers the output grid.

    Returns:
        ``[B, C, N_1, …, N_D]`` in ``control``'s dtype and units (see the module docstring for the grid
        alignment; multiply by ``s`` to turn level-voxel displacements into full-resolution voxels).
    """
    spatial = control.shape[2:]
    ndim = len(spatial)
    if ndim not in (2, 3):
        raise ValueError(f"control must be [B, C, n1, n2(, n3)], got shape {tuple(control.shape)}")
    s = int(factor)
    out_size = tuple(n * s for n in spatial) if size is None else tuple(int(n) for n in size)
    if len(out_size) != ndim or any(
        not (n - 1) * s < m <= n * s for n, m in zip(spatial, out_size, strict=True)
    ):
        raise ValueError(f"size {out_size} is not covered by a {tuple(spatial)} control grid at factor {s}")
    channels = control.shape[1]
    w, d0 = bspline_kernel(s, control.dtype)
    w = w.to(control.device)
    conv_t = F.conv_transpose3d if ndim == 3 else F.conv_transpose2d
    out = F.pad(control, (_PAD, _PAD) * ndim, mode="replicate")
    start = _PAD * s - d0  # output index of full-resolution voxel 0 (see bspline_kernel)
    for axis in range(ndim):
        shape = [1] * ndim
        shape[axis] = w.numel()
        stride = [1] * ndim
        stride[axis] = s
        weight = w.view(1, 1, *shape).expand(channels, 1, *shape)
        out = conv_t(out, weight, stride=tuple(stride), groups=channels)
        out = out.narrow(2 + axis, start, out_size[axis])
    return out
