"""Local correlation (cost volume) of radius 1, as in the DP networks (Liu, Ruan & Sheng, MIDL 2025).

``corr[k](p) = C^-½ · Σ_c x_c(p) · y_c(p + o_k)`` for the 27 offsets ``o_k ∈ {-1, 0, 1}³`` enumerated in
row-major order (offset along axis 0 slowest, axis 2 fastest); ``y`` is zero-padded; no normalisation,
no softmax, no learnt weights (the rethink-reg ``WinCorrTorch`` definition used by the paper's code).

Layout: for channels-last CPU inputs (see :mod:`methods.blocks`) the channel sums run over the innermost axis and
the 27 maps are written straight into a channels-last ``[B, 27, X, Y, Z]`` tensor, ready for the next
convolution; the values do not depend on the layout.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

from methods.instance_norm import is_cpu_channels_last

__all__ = ["OFFSETS", "correlation", "neighbourhood_dot"]

#: The 27 offsets, row-major (axis 0 slowest).
OFFSETS: tuple[tuple[int, int, int], ...] = tuple(itertools.product((-1, 0, 1), repeat=3))


def _shifted(t: torch.Tensor, offset: tuple[int, int, int], size: torch.Size) -> torch.Tensor:
    """View of a tensor padded by 1 per side, shifted by ``offset``: ``t[..., 1 + o_0 : 1 + o_0 + X, …]``."""
    a, b, c = offset
    return t[:, :, 1 + a : 1 + a + size[0], 1 + b : 1 + b + size[1], 1 + c : 1 + c + size[2]]


class _NeighbourhoodDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, y_padded: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        ctx.save_for_backward(x, y_padded)
        maps = [(x * _shifted(y_padded, o, size)).sum(1) for o in OFFSETS]
        if not is_cpu_channels_last(x):
            return torch.stack(maps, dim=1)
        out = torch.empty((x.shape[0], len(OFFSETS), *size), dtype=x.dtype, memory_format=torch.channels_last_3d)
        torch.stack(maps, dim=-1, out=out.permute(0, 2, 3, 4, 1))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, y_padded = ctx.saved_tensors  # type: ignore[attr-defined]
        size = x.shape[2:]
        need_x, need_y = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_y = torch.zeros_like(y_padded) if need_y else None
        for j, o in enumerate(OFFSETS):
            g = grad[:, j : j + 1]
            if grad_x is not None:
                grad_x.addcmul_(g, _shifted(y_padded, o, size))
            if grad_y is not None:
                _shifted(grad_y, o, size).addcmul_(g, x)
        return grad_x, grad_y


def neighbourhood_dot(x: torch.Tensor, y_padded: torch.Tensor) -> torch.Tensor:
    """Channel dot products of ``x`` with its 27 radius-1 neighbours in ``y``: ``[B, 27, X, Y, Z]``.

    ``out[:, j](p) = Σ_c x_c(p) · y_c(p + o_j)`` with ``o_j = OFFSETS[j]`` (row-major, axis 0 slowest).

    Args:
        x: ``[B, C, X, Y, Z]``.
        y_padded: ``y`` padded by one voxel per side (any padding mode), ``[B, C, X + 2, Y + 2, Z + 2]``.
            Both inputs are promoted to a common dtype.

    Differentiable once in both inputs (hand-written backward, see the module note).
    """
    if x.dim() != 5 or y_padded.dim() != 5 or y_padded.shape[:2] != x.shape[:2] or any(
        n + 2 != m for n, m in zip(x.shape[2:], y_padded.shape[2:], strict=True)
    ):
        raise ValueError(
            f"y_padded {tuple(y_padded.shape)} must be x {tuple(x.shape)} padded by one voxel per side"
        )
    dtype = torch.promote_types(x.dtype, y_padded.dtype)
    return _NeighbourhoodDot.apply(x.to(dtype), y_padded.to(dtype))


def correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cost volume ``[B, C, X, Y, Z]`` × ``[B, C, X, Y, Z]`` → ``[B, 27, X, Y, Z]`` (radius 1).

    ``x`` stays put and ``y`` is shifted (the DP code calls ``correlation(fixed, warped_moving)``); ``y`` is
    zero-padded. Built on :func:`neighbourhood_dot`, whose hand-written backward avoids a full-size
    zero-filled gradient per offset.
    """
    if is_cpu_channels_last(x):
        y = y.contiguous(memory_format=torch.channels_last_3d)
    return neighbourhood_dot(x, F.pad(y, (1, 1, 1, 1, 1, 1))) * x.shape[1] ** -0.5
