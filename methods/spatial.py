"""Spatial core shared by every method: identity grid, warping, composition, flow resizing, Jacobians.

Displacement convention (``ARCHITECTURE.md``; Learn2Reg / LUMIR / scipy ``map_coordinates``): a dense
field ``u`` of shape ``[B, 3, X, Y, Z]`` on the *fixed* grid, in *voxel units*; channel ``c`` moves along
tensor spatial axis ``c``; warping pulls back, ``warped(x) = moving(x + u(x))``.

The conversion to ``grid_sample``'s normalised ``[-1, 1]`` coordinates (reversed axis order,
``align_corners=True``: voxel ``p`` maps to ``2 p / (S - 1) - 1``) happens only inside :func:`warp`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["compose", "identity_grid", "jacobian_det", "resize_flow", "sampling_grid", "warp"]


def identity_grid(
    shape: tuple[int, ...] | torch.Size, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Voxel-index grid ``[1, D, *shape]`` (``D = len(shape)``); channel ``c`` holds the index along axis ``c``."""
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def warp(
    image: torch.Tensor,
    disp: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Pull ``image`` back through ``disp``: ``out(x) = image(x + disp(x))``.

    Args:
        image: ``[B, C, X, Y, Z]`` (or ``[B, C, X, Y]`` in 2D), any channel count; labels as float.
        disp: ``[B, 3, X', Y', Z']`` voxel displacement on the output (fixed) grid. Its spatial size may
            differ from ``image``'s only if it is expressed in ``image``'s voxel units.
        mode: ``"bilinear"`` (trilinear in 3D) for images and fields, ``"nearest"`` for labels.
        padding_mode: ``"border"`` (the DP / VFA models) or ``"zeros"`` (the official evaluators).

    Returns:
        ``[B, C, X', Y', Z']`` in ``image``'s dtype.
    """
    grid = sampling_grid(disp, image.shape[2:])
    out = F.grid_sample(image.to(grid.dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return out.to(image.dtype) if image.is_floating_point() else out


def sampling_grid(disp: torch.Tensor, image_shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """``grid_sample`` grid (``align_corners=True``) of the points ``x + disp(x)``: ``[B, *spatial, D]``.

    Component ``c`` of the point, ``p_c + u_c`` in voxels of an image with ``S_c`` voxels along axis ``c``, becomes
    ``(p_c + u_c) · 2 / (S_c − 1) − 1``, in that order of operations (the authors' codes', which decides on which
    side of a voxel boundary a rounded point falls, and so the one-sided derivative that trilinear sampling has at
    integer coordinates, e.g. everywhere at a zero displacement), with a 1-D ramp per axis broadcast instead of a
    full identity grid. The last axis lists the components in ``grid_sample``'s reversed order (axis ``D − 1`` first).
    """
    comps = []
    dims = disp.dim() - 2
    for c in reversed(range(dims)):
        ramp = torch.arange(disp.shape[2 + c], device=disp.device, dtype=disp.dtype)
        shape = [1] * dims
        shape[c] = -1
        comps.append((disp[:, c] + ramp.view(shape)).mul_(2.0 / max(int(image_shape[c]) - 1, 1)).sub_(1.0))
    return torch.stack(comps, dim=-1)


def compose(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Displacement of the composition φ1 ∘ φ2 with φi(x) = x + ui(x): ``u2 + warp(u1, u2)``.

    Warping an image by the result equals warping it by ``u1`` and then warping that by ``u2``
    (the DP code's ``ComposeDVF(u1, u2)``). Shapes ``[B, 3, X, Y, Z]``, voxel units.
    """
    return u2 + warp(u1, u2, mode="bilinear", padding_mode="border")


def resize_flow(disp: torch.Tensor, scale_factor: float = 2.0) -> torch.Tensor:
    """Resize a voxel displacement by ``scale_factor``: scale the values first, then interpolate.

    ``[B, 3, X, Y, Z]`` → ``[B, 3, s X, s Y, s Z]``; trilinear with ``align_corners=True`` (the DP code's
    ``ResizeFlow``, from rethink-reg).
    """
    mode = "trilinear" if disp.dim() == 5 else "bilinear"
    return F.interpolate(disp * scale_factor, scale_factor=scale_factor, mode=mode, align_corners=True)


def jacobian_det(disp: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant of φ = id + u, ``[B, 3, X, Y, Z]`` → ``[B, X, Y, Z]``.

    Central differences in the interior, one-sided at the faces (``torch.gradient``). This is the
    differentiable / visual variant; the reported SDlogJ and NDV use the official definitions in
    ``dirbench.metrics``.
    """
    grads = [torch.gradient(disp[:, c], dim=(1, 2, 3)) for c in range(3)]
    # J[i][j] = d phi_i / d x_j
    J = [[grads[i][j] + (1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    return (
        J[0][0] * (J[1][1] * J[2][2] - J[1][2] * J[2][1])
        - J[0][1] * (J[1][0] * J[2][2] - J[1][2] * J[2][0])
        + J[0][2] * (J[1][0] * J[2][1] - J[1][1] * J[2][0])
    )
