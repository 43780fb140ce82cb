"""Local correlation (cost volume) of radius 1, as in the DP networks (Liu, Ruan & Sheng, MIDL 2025).

``corr[k](p) = C^-½ · Σ_c x_c(p) · y_c(p + o_k)`` for the 27 offsets ``o_k ∈ {-1, 0, 1}³`` enumerated in
row-major order (offset along axis 0 slowest, axis 2 fastest); ``y`` is zero-padded; no normalisation,
no softmax, no learnt weights (the rethink-reg ``WinCorrTorch`` definition used by the paper's code).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

__all__ = ["OFFSETS", "correlation"]

#: The 27 offsets, row-major (axis 0 slowest).
OFFSETS: tuple[tuple[int, int, int], ...] = tuple(itertools.product((-1, 0, 1), repeat=3))


def correlation(x: torch.Tensor, y: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Cost volume ``[B, C, X, Y, Z]`` × ``[B, C, X, Y, Z]`` → ``[B, (2r+1)³, X, Y, Z]``.

    ``x`` stays put and ``y`` is shifted (the DP code calls ``correlation(fixed, warped_moving)``).
    """
    r = radius
    channels = x.shape[1]
    size = x.shape[2:]
    y_pad = F.pad(y, (r, r, r, r, r, r))
    out = []
    for o in itertools.product(range(-r, r + 1), repeat=3):
        ys = y_pad[:, :, r + o[0] : r + o[0] + size[0], r + o[1] : r + o[1] + size[1], r + o[2] : r + o[2] + size[2]]
        out.append((x * ys).sum(dim=1))
    return torch.stack(out, dim=1) * channels**-0.5
