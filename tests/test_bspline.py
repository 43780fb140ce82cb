"""Cubic B-spline control-point upsampling: analytic fixtures and a direct basis-sum reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from methods.bspline import bspline_kernel, bspline_upsample, cubic_bspline


def _basis_matrix(n: int, factor: int, size: int) -> np.ndarray:
    """``W[x, i] = Σ_j β³(t(x) − j)`` over the control indices ``j`` that clamp to ``i`` (border replication),
    with ``t(x) = (x + 0.5) / s − 0.5``; evaluated pointwise from the closed-form basis."""

    def beta(t: float) -> float:
        a = abs(t)
        if a <= 1:
            return 2 / 3 - a**2 + a**3 / 2
        return (2 - a) ** 3 / 6 if a < 2 else 0.0

    W = np.zeros((size, n))
    for x in range(size):
        t = (x + 0.5) / factor - 0.5
        for j in range(int(np.floor(t)) - 2, int(np.floor(t)) + 3):
            W[x, min(max(j, 0), n - 1)] += beta(t - j)
    return W


def test_cubic_bspline_values() -> None:
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, -1.0, 3.0], dtype=torch.float64)
    expected = torch.tensor([2 / 3, 23 / 48, 1 / 6, 1 / 48, 0.0, 1 / 6, 0.0], dtype=torch.float64)
    assert torch.allclose(cubic_bspline(t), expected, atol=1e-15)


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 32])
def test_kernel_is_a_partition_of_unity(factor: int) -> None:
    w, d0 = bspline_kernel(factor)
    assert w.numel() == (3 if factor == 1 else 4 * factor)
    # Every phase r = x mod s receives weights summing to 1 (constants are reproduced).
    for r in range(factor):
        phase = w[(torch.arange(w.numel()) + d0) % factor == r]
        assert abs(float(phase.sum()) - 1.0) < 1e-12


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_constant_grid_stays_constant(factor: int) -> None:
    ctrl = torch.full((2, 3, 3, 4, 5), 0.37, dtype=torch.float64)
    ctrl[1] = -1.25
    out = bspline_upsample(ctrl, factor)
    assert out.shape == (2, 3, 3 * factor, 4 * factor, 5 * factor)
    assert torch.allclose(out[0], torch.full_like(out[0], 0.37), atol=1e-13)
    assert torch.allclose(out[1], torch.full_like(out[1], -1.25), atol=1e-13)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_linear_grid_gives_linear_field_away_from_border(factor: int) -> None:
    n = (6, 7, 8)
    i = torch.stack(torch.meshgrid(*[torch.arange(k, dtype=torch.float64) for k in n], indexing="ij"))
    a = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    ctrl = (0.25 + (a.view(3, 1, 1, 1) * i).sum(0))[None, None]
    out = bspline_upsample(ctrl, factor)[0, 0]
    x = torch.stack(
        torch.meshgrid(*[torch.arange(k * factor, dtype=torch.float64) for k in n], indexing="ij")
    )
    t = (x + 0.5) / factor - 0.5  # control-grid coordinate of every output voxel
    expected = 0.25 + (a.view(3, 1, 1, 1) * t).sum(0)
    # Linear reproduction needs every contributing control point inside the grid: t in [1, n - 2].
    inner = torch.ones_like(out, dtype=torch.bool)
    for d, k in enumerate(n):
        inner &= (t[d] >= 1) & (t[d] <= k - 2)
    assert inner.sum() > 0
    assert torch.allclose(out[inner], expected[inner], atol=1e-12)
    # At the border the replicated control points bend the field: it is not linear there.
    assert (out - expected).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("factor", "n", "size"),
    [(1, (5, 6, 4), None), (2, (4, 5, 3), None), (4, (3, 4, 3), (10, 16, 9)), (8, (2, 3, 2), (13, 24, 16))],
)
def test_matches_direct_basis_sum(
    factor: int, n: tuple[int, int, int], size: tuple[int, int, int] | None
) -> None:
    rng = np.random.default_rng(7)
    ctrl = rng.standard_normal((2, 3, *n))
    out = bspline_upsample(torch.from_numpy(ctrl), factor, size).numpy()
    shape = tuple(k * factor for k in n) if size is None else size
    assert out.shape == (2, 3, *shape)
    Wx, Wy, Wz = (_basis_matrix(k, factor, m) for k, m in zip(n, shape, strict=True))
    ref = np.einsum("xi,yj,zk,bcijk->bcxyz", Wx, Wy, Wz, ctrl)
    assert np.abs(out - ref).max() < 1e-12
    # A few points by the plain triple sum, independent of the separable matrices.
    for x, y, z in itertools.islice(itertools.product(*[range(0, m, max(1, m // 3)) for m in shape]), 12):
        tx, ty, tz = ((p + 0.5) / factor - 0.5 for p in (x, y, z))
        value = 0.0
        for i, j, k in itertools.product(*[range(-2, m + 2) for m in n]):
            w = float(cubic_bspline(torch.tensor([tx - i, ty - j, tz - k], dtype=torch.float64)).prod())
            if w:
                value += (
                    w
                    * ctrl[1, 2, min(max(i, 0), n[0] - 1), min(max(j, 0), n[1] - 1), min(max(k, 0), n[2] - 1)]
                )
        assert abs(out[1, 2, x, y, z] - value) < 1e-12


def test_two_dimensional_and_size_checks() -> None:
    ctrl = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    out = bspline_upsample(ctrl, 2)
    W1, W2 = _basis_matrix(4, 2, 8), _basis_matrix(5, 2, 10)
    ref = np.einsum("xi,yj,bcij->bcxy", W1, W2, ctrl.numpy())
    assert np.abs(out.numpy() - ref).max() < 1e-12
    with pytest.raises(ValueError, match="not covered"):
        bspline_upsample(ctrl, 2, (6, 10))  # 4 control points at factor 2 cover 7..8 voxels
    with pytest.raises(ValueError, match="control must be"):
        bspline_upsample(torch.zeros(1, 1, 4), 2)


def test_gradient_flows_to_control_points() -> None:
    ctrl = torch.randn(1, 1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: bspline_upsample(c, 2), (ctrl,))
