"""Vector field attention (VFA) over a 3×3×3 neighbourhood, shared by VFA and DP-VFA.

Liu, Chen, Zuo, Carass & Prince, "Vector field attention for deformable image registration",
J. Med. Imaging 11:064001 (2024); used as decoder (c) "DP-VFA" by Liu, Ruan & Sheng (MIDL 2025).

For every voxel ``p`` of the fixed grid, the query ``q(p)`` attends to the 27 keys ``k(p + o_j)`` of its
radius-1 neighbourhood, ``o_j ∈ {-1, 0, 1}³``. The values are the offsets themselves, so the output is a
displacement: ``u(p) = Σ_j softmax_j(q(p) · k(p + o_j) / τ) · o_j`` in voxels of the level's grid. Because
it is a convex combination of the offsets, every component satisfies ``|u_c| ≤ 1``.

Implementation note: the attention logits come from :func:`neighbourhood_dot`, which forms them one offset
at a time from shifted views of the padded keys instead of materialising the ``[B, C, 27, X, Y, Z]``
unfolded keys (the tests check the result against an explicit unfold), and whose hand-written backward
accumulates the gradients in place: autograd through 27 slices would allocate, zero-fill and add a
full-size padded gradient per offset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methods.blocks import cpu_channels_last
from methods.correlation import neighbourhood_dot

__all__ = ["ProjectedAttention", "vector_field_attention"]


def vector_field_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float | None = None,
    key_padded: bool = False,
) -> torch.Tensor:
    """Displacement from attention of each query over its 27 neighbouring keys (values = offsets).

    Args:
        query: ``[B, C, X, Y, Z]`` projected fixed features.
        key: projected (warped) moving features, ``[B, C, X, Y, Z]``; replicate-padded by 1 voxel here.
            With ``key_padded=True`` the caller has already padded them (and possibly projected after
            padding, as VFA and DP-VFA do): ``[B, C, X + 2, Y + 2, Z + 2]``, used as is.
        temperature: softmax temperature τ; ``None`` gives ``sqrt(C)``.
        key_padded: see ``key``.

    Returns:
        ``[B, 3, X, Y, Z]`` voxel displacement on the query grid (component ``c`` along axis ``c``),
        each component in ``[-1, 1]``.
    """
    if query.dim() != 5 or key.dim() != 5:
        raise ValueError(f"expected [B, C, X, Y, Z] tensors, got {tuple(query.shape)} and {tuple(key.shape)}")
    if not key_padded:
        key = F.pad(key, (1, 1, 1, 1, 1, 1), mode="replicate")
    tau = math.sqrt(query.shape[1]) if temperature is None else float(temperature)
    logits = neighbourhood_dot(query, key)
    # Expected offset = Σ_j w_j o_j. OFFSETS is the row-major product of (-1, 0, 1), so along axis c it
    # is P(o_c = +1) − P(o_c = −1) of the marginals of the [3, 3, 3]-shaped weights; these sums stay in
    # the softmax's (at least) float32 under autocast (an einsum would drop to bf16).
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    weights = torch.softmax(logits / tau, dim=1).unflatten(1, (3, 3, 3))
    marginals = [weights.sum(dim=dims) for dims in ((2, 3), (1, 3), (1, 2))]  # each [B, 3, X, Y, Z]
    return torch.stack([m[:, 2] - m[:, 0] for m in marginals], dim=1)


class ProjectedAttention(nn.Module):
    """One VFA attention level with its learnt projection shared by the fixed and the moving stream.

    ``P = Conv3d(in_ch → match_ch, 3³, padding 1, bias)`` with PyTorch's default init. The query is
    ``P(f)``; the keys are ``P(replicate_pad(m̃, 1))``: the warped moving features are padded *before*
    the projection (the order ``spec/methods-dp.md`` §2c and ``spec/methods-baselines.md`` §4 record for
    DP-VFA and VFA), so the ring of keys outside the volume is the projection of the replicated border
    features. Temperature ``sqrt(match_ch)``.

    ``forward(moving, fixed)``: ``[B, in_ch, X, Y, Z]`` ×2 → ``[B, 3, X, Y, Z]`` voxel displacement, each
    component in ``[-1, 1]``.
    """

    def __init__(self, in_ch: int, match_ch: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_ch, match_ch, 3, padding=1)
        self.temperature = math.sqrt(match_ch)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        query = self.proj(cpu_channels_last(fixed))
        key = self.proj(cpu_channels_last(F.pad(moving, (1, 1, 1, 1, 1, 1), mode="replicate")))
        return vector_field_attention(query, key, self.temperature, key_padded=True)
