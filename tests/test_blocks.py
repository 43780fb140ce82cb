"""Shared building blocks: the DP encoder and flow head, the correlation volume, vector field attention."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods.blocks import ENCODER_CHANNELS, DPEncoder, ResidualBlock, flow_head
from methods.correlation import OFFSETS, correlation, neighbourhood_dot
from methods.vfa_attention import ProjectedAttention, vector_field_attention


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- DP encoder, residual block, flow head -------------------------------------------------------------


def test_encoder_param_count_and_pyramid_shapes() -> None:
    enc = DPEncoder()
    assert n_params(enc) == 507_504
    feats = enc(torch.rand(2, 1, 32, 48, 16))
    assert [tuple(f.shape) for f in feats] == [
        (2, c, 32 // 2**k, 48 // 2**k, 16 // 2**k) for k, c in enumerate(ENCODER_CHANNELS)
    ]


def test_encoder_init_kaiming_and_zero_bias() -> None:
    torch.manual_seed(0)
    enc = DPEncoder()
    conv = enc.blocks[4].conv2  # 64 → 64, 3³: fan_in = 1728
    assert torch.all(conv.bias == 0)
    gain = (2.0 / (1 + 0.2**2)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(gain / 1728**0.5, rel=0.05)


def test_residual_block_stride_and_skip() -> None:
    block = ResidualBlock(4, 6, stride=2)
    assert tuple(block(torch.rand(1, 4, 8, 8, 8)).shape) == (1, 6, 4, 4, 4)
    # conv3(4→6) + IN + conv3(6→6) + IN + conv1(4→6) + IN, the skip conv present although in != out too
    assert n_params(ResidualBlock(6, 6)) == (27 * 36 + 6) * 2 + (36 + 6) + 3 * 12


def test_flow_head_init() -> None:
    torch.manual_seed(0)
    head = flow_head(128)
    assert torch.all(head.bias == 0)
    assert head.weight.std().item() == pytest.approx(1e-5, rel=0.05)


# --- correlation ---------------------------------------------------------------------------------------


def _correlation_loop(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Direct per-voxel, per-offset evaluation with zero padding outside ``y``."""
    B, C, X, Y, Z = x.shape
    out = np.zeros((B, 27, X, Y, Z))
    for k, (a, b, c) in enumerate(itertools.product((-1, 0, 1), repeat=3)):
        for i, j, h in itertools.product(range(X), range(Y), range(Z)):
            p, q, r = i + a, j + b, h + c
            if 0 <= p < X and 0 <= q < Y and 0 <= r < Z:
                out[:, k, i, j, h] = (x[:, :, i, j, h] * y[:, :, p, q, r]).sum(1) / np.sqrt(C)
    return out


def test_correlation_matches_direct_loop(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 5, 4, 5, 3))
    y = rng.standard_normal((2, 5, 4, 5, 3))
    got = correlation(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(got, _correlation_loop(x, y), rtol=1e-12, atol=1e-12)


def test_correlation_offset_order_row_major() -> None:
    assert OFFSETS[0] == (-1, -1, -1) and OFFSETS[1] == (-1, -1, 0) and OFFSETS[3] == (-1, 0, -1)
    assert OFFSETS[9] == (0, -1, -1) and OFFSETS[13] == (0, 0, 0) and OFFSETS[26] == (1, 1, 1)
    # y is a delta at (3, 2, 4); x is one at (2, 3, 4): the product is non-zero only for o = (1, -1, 0).
    x = torch.zeros(1, 1, 6, 6, 6)
    y = torch.zeros(1, 1, 6, 6, 6)
    x[0, 0, 2, 3, 4] = 1.0
    y[0, 0, 3, 2, 4] = 1.0
    corr = correlation(x, y)
    nonzero = torch.nonzero(corr[0]).tolist()
    assert nonzero == [[OFFSETS.index((1, -1, 0)), 2, 3, 4]]


def test_correlation_scaling_and_zero_padding() -> None:
    C = 16
    corr = correlation(torch.ones(1, C, 4, 4, 4), torch.ones(1, C, 4, 4, 4))
    # interior: Σ_c 1 = C, times C^-1/2 → sqrt(C) = 4 for every offset
    torch.testing.assert_close(corr[0, :, 1:3, 1:3, 1:3], torch.full((27, 2, 2, 2), 4.0))
    # the corner voxel sees 8 in-bounds neighbours (its own octant), the 19 others are zero padding
    corner = corr[0, :, 0, 0, 0]
    assert int((corner == 4.0).sum()) == 8 and int((corner == 0.0).sum()) == 19
    assert all(corner[k] == 4.0 for k, o in enumerate(OFFSETS) if min(o) >= 0)


# --- vector field attention -------------------------------------------------------------------------------


def _attention_unfold(q: torch.Tensor, k_padded: torch.Tensor, tau: float) -> torch.Tensor:
    """Reference: explicit 3×3×3 unfold of the padded keys, softmax, weighted sum of the offsets."""
    B, C, X, Y, Z = q.shape
    keys = k_padded.unfold(2, 3, 1).unfold(3, 3, 1).unfold(4, 3, 1)  # [B, C, X, Y, Z, 3, 3, 3]
    keys = keys.reshape(B, C, X, Y, Z, 27)
    w = torch.softmax(torch.einsum("bcxyz,bcxyzj->bxyzj", q, keys) / tau, dim=-1)
    offsets = torch.tensor(list(itertools.product((-1.0, 0.0, 1.0), repeat=3)), dtype=q.dtype)
    return torch.einsum("bxyzj,jc->bcxyz", w, offsets)


def test_neighbourhood_dot_values_and_gradients() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 3, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    # zero padding: the cost volume of methods.correlation without its C^-1/2
    got = neighbourhood_dot(x, F.pad(y, (1,) * 6))
    torch.testing.assert_close(got, correlation(x, y) * 3**0.5)
    # the hand-written backward against autograd through slices, through a replicate padding
    weights = torch.randn(2, 27, 4, 5, 3, dtype=torch.float64)
    out = neighbourhood_dot(x, F.pad(y, (1,) * 6, mode="replicate"))
    grads = torch.autograd.grad((out * weights).sum(), (x, y))
    y_rep = F.pad(y, (1,) * 6, mode="replicate")
    shifted = [y_rep[:, :, 1 + a : 5 + a, 1 + b : 6 + b, 1 + c : 4 + c] for a, b, c in OFFSETS]
    ref = torch.stack([(x * ys).sum(1) for ys in shifted], 1)
    ref_grads = torch.autograd.grad((ref * weights).sum(), (x, y))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    x_small = torch.randn(1, 2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    y_small = torch.randn(1, 2, 5, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(neighbourhood_dot, (x_small, y_small))


def test_attention_matches_unfold_reference() -> None:
    torch.manual_seed(0)
    q = torch.randn(2, 6, 5, 4, 6, dtype=torch.float64)
    k = torch.randn(2, 6, 5, 4, 6, dtype=torch.float64)
    got = vector_field_attention(q, k)  # τ = sqrt(6), replicate padding inside
    ref = _attention_unfold(q, F.pad(k, (1,) * 6, mode="replicate"), 6**0.5)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    k_pad = torch.randn(2, 6, 7, 6, 8, dtype=torch.float64)
    got = vector_field_attention(q, k_pad, temperature=0.7, key_padded=True)
    torch.testing.assert_close(got, _attention_unfold(q, k_pad, 0.7), rtol=1e-10, atol=1e-12)


def test_attention_weights_normalised_and_bounded() -> None:
    torch.manual_seed(1)
    # Equal keys everywhere: uniform weights (summing to 1) give the mean offset, exactly 0.
    u = vector_field_attention(torch.randn(1, 4, 5, 5, 5), torch.ones(1, 4, 5, 5, 5))
    torch.testing.assert_close(u, torch.zeros_like(u), atol=1e-6, rtol=0)
    # One dominant key: the weight 1 lands on its offset, so u equals that offset exactly.
    q = torch.ones(1, 1, 5, 5, 5)
    k = torch.zeros(1, 1, 5, 5, 5)
    k[0, 0, 3, 1, 2] = 1.0
    u = vector_field_attention(q, k, temperature=1e-3)
    assert u[0, :, 2, 2, 2].tolist() == [1.0, -1.0, 0.0]
    # Large random logits: every component stays in [-1, 1].
    u = vector_field_attention(50 * torch.randn(2, 8, 6, 6, 6), 50 * torch.randn(2, 8, 6, 6, 6))
    assert u.abs().max() <= 1.0 and u.abs().max() > 0.9


def test_attention_key_padding_is_replicate() -> None:
    # Keys increase along axis 0; the query at the top face prefers large keys. With replicate padding the
    # outside neighbour equals the face value, a tie between o = 0 and o = +1 along axis 0 → u_0 = 0.5.
    k = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(1, 1, 4, 3, 3).contiguous()
    u = vector_field_attention(torch.ones(1, 1, 4, 3, 3), k, temperature=1e-3)
    assert u[0, 0, 3, 1, 1].item() == pytest.approx(0.5)
    assert u[0, 0, 1, 1, 1].item() == pytest.approx(1.0)


def test_attention_shape_errors() -> None:
    with pytest.raises(ValueError, match="padded by one voxel"):
        vector_field_attention(torch.rand(1, 2, 4, 4, 4), torch.rand(1, 2, 4, 4, 4), key_padded=True)
    with pytest.raises(ValueError, match=r"\[B, C, X, Y, Z\]"):
        vector_field_attention(torch.rand(2, 4, 4, 4), torch.rand(2, 4, 4, 4))


def test_projected_attention_pads_before_projection() -> None:
    torch.manual_seed(2)
    att = ProjectedAttention(4, 3).double()
    assert n_params(att) == 27 * 4 * 3 + 3 and att.temperature == pytest.approx(3**0.5)
    m = torch.randn(1, 4, 6, 5, 4, dtype=torch.float64)
    f = torch.randn(1, 4, 6, 5, 4, dtype=torch.float64)
    q = F.conv3d(f, att.proj.weight, att.proj.bias, padding=1)
    k_first_pad = F.conv3d(F.pad(m, (1,) * 6, mode="replicate"), att.proj.weight, att.proj.bias, padding=1)
    got = att(m, f)
    torch.testing.assert_close(got, _attention_unfold(q, k_first_pad, 3**0.5), rtol=1e-10, atol=1e-12)
    # The other order (project, then pad) differs on the border, so the test pins the order down.
    k_proj_first = F.pad(F.conv3d(m, att.proj.weight, att.proj.bias, padding=1), (1,) * 6, mode="replicate")
    other = _attention_unfold(q, k_proj_first, 3**0.5)
    assert (got - other).abs().max() > 1e-3
    torch.testing.assert_close(got[..., 2:-2, 2:-2, 2:-2], other[..., 2:-2, 2:-2, 2:-2])
