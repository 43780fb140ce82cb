"""Fixed-point displacement inversion: accuracy, Anderson vs plain iteration, implicit gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from methods.inversion import (
    BACKWARD_SOLVER,
    FORWARD_SOLVER,
    SolverSettings,
    fixed_point_solve,
    invert_displacement,
)
from methods.spatial import compose, identity_grid, warp


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], amp: float, sigma: float) -> torch.Tensor:
    """``[1, 3, *shape]`` float32 random smooth field with max |u| = amp voxels."""
    field = np.stack([gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)])
    return torch.from_numpy(amp * field / np.abs(field).max()).float()[None]


def test_defaults_match_the_inversion_layer() -> None:
    assert (
        FORWARD_SOLVER.tol,
        FORWARD_SOLVER.criterion,
        FORWARD_SOLVER.min_iter,
        FORWARD_SOLVER.max_iter,
    ) == (1e-2, "max_abs", 2, 50)
    assert (
        BACKWARD_SOLVER.tol,
        BACKWARD_SOLVER.criterion,
        BACKWARD_SOLVER.min_iter,
        BACKWARD_SOLVER.max_iter,
    ) == (1e-2, "rel_l2", 2, 50)
    assert FORWARD_SOLVER.memory == BACKWARD_SOLVER.memory == 4
    with pytest.raises(ValueError, match="criterion"):
        SolverSettings(criterion="l1")  # type: ignore[arg-type]


def test_anderson_solves_a_linear_system() -> None:
    # x = A x + b with a contraction A (spectral radius 0.9): exact solution known.
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=torch.float64))
    A = q @ torch.diag(torch.linspace(-0.9, 0.9, 30, dtype=torch.float64)) @ q.T
    b = torch.randn(2, 30, generator=gen, dtype=torch.float64)
    exact = torch.linalg.solve(torch.eye(30, dtype=torch.float64) - A, b.T).T
    # The upstream ridge (absolute 1e-4) is sized for displacement fields of millions of elements, whose residual
    # Gram entries dwarf it; here the squared residuals fall to ~1e-20, so any ridge above that would turn the
    # mixing into plain averaging: plain Anderson (no ridge) is what this test measures.
    settings = SolverSettings(tol=1e-10, max_iter=300, regularisation=0.0)
    x, n_anderson = fixed_point_solve(lambda x: x @ A.T + b, torch.zeros_like(b), settings)
    assert torch.allclose(x, exact, atol=1e-8)
    _, n_plain = fixed_point_solve(
        lambda x: x @ A.T + b, torch.zeros_like(b), SolverSettings(tol=1e-10, memory=1, max_iter=300)
    )
    assert n_anderson < 0.6 * n_plain


def test_anderson_step_uses_the_absolute_ridge() -> None:
    # Three evaluations with memory 2, computed by hand: x1 = f(x0), then x2 = Σ α_i f_i with
    # α = (G + λI)⁻¹ 1 / 1ᵀ(G + λI)⁻¹ 1 over the last two residuals g_i = f(x_i) − x_i, λ = 1e-4 absolute.
    gen = torch.Generator().manual_seed(1)
    A = 0.5 * torch.randn(3, 4, 4, generator=gen, dtype=torch.float64) / 2
    b = 1e-3 * torch.randn(3, 4, generator=gen, dtype=torch.float64)  # small residuals: the ridge matters

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bj->bi", A, x) + b

    x0 = torch.zeros_like(b)
    f0 = fn(x0)
    x1 = f0
    f1 = fn(x1)
    expected = []
    for k in range(3):
        g = torch.stack([f0[k] - x0[k], f1[k] - x1[k]])
        z = torch.linalg.solve(g @ g.T + 1e-4 * torch.eye(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
        alpha = z / z.sum()
        expected.append(fn((alpha[0] * f0[k] + alpha[1] * f1[k])[None].expand(3, -1))[k])
    out, n = fixed_point_solve(fn, x0, SolverSettings(tol=0.0, memory=2, min_iter=3, max_iter=3))
    assert n == 3
    assert torch.allclose(out, torch.stack(expected), atol=1e-15, rtol=0)
    assert FORWARD_SOLVER.regularisation == BACKWARD_SOLVER.regularisation == 1e-4


def test_inverse_composes_to_identity_both_ways(rng: np.random.Generator) -> None:
    u = smooth_field(rng, (32, 32, 32), amp=2.5, sigma=4.0)
    v = invert_displacement(u)
    inner = (..., slice(4, -4), slice(4, -4), slice(4, -4))
    # φ_u ∘ φ_v = id is the solved equation: its residual is the stop tolerance (1e-2 max-abs change).
    assert compose(u, v)[inner].abs().max() < 1e-2
    # φ_v ∘ φ_u = id also holds, up to the linear interpolation of v.
    assert compose(v, u)[inner].abs().max() < 0.05
    # Tighter tolerance → tighter residual.
    v_tight = invert_displacement(u, forward=SolverSettings(tol=1e-5, max_iter=200))
    assert compose(u, v_tight)[inner].abs().max() < 1e-4


def test_constant_translation_inverts_exactly() -> None:
    u = torch.zeros(2, 3, 12, 12, 12)
    u[0, 0] = 1.5
    u[1, 2] = -0.75
    v = invert_displacement(u)
    assert torch.allclose(v, -u, atol=1e-6)


def test_anderson_needs_fewer_iterations_than_plain_iteration() -> None:
    # Sinusoidal field with max |∂u0/∂x0| = 0.85: a weak contraction, so plain iteration is slow.
    x = identity_grid((32, 32, 32))
    period = 16.0
    amp = 0.85 * period / (2 * math.pi)
    u = torch.zeros(1, 3, 32, 32, 32)
    u[:, 0] = amp * torch.sin(2 * math.pi * x[:, 0] / period)
    u[:, 1] = 0.5 * amp * torch.sin(2 * math.pi * (x[:, 0] + x[:, 2]) / period)
    u[:, 2] = 0.3 * amp * torch.cos(2 * math.pi * x[:, 1] / period)

    def step(v: torch.Tensor) -> torch.Tensor:
        return -warp(u, v)

    for tol in (1e-2, 1e-3):
        counts = {}
        for memory in (1, 4):
            v, counts[memory] = fixed_point_solve(
                step, -u, SolverSettings(tol=tol, memory=memory, max_iter=200)
            )
            assert (step(v) - v).abs().max() < tol
        assert counts[4] <= counts[1] / 2, counts


def _unrolled_inverse(u: torch.Tensor, n: int) -> torch.Tensor:
    """Plain fixed-point iteration from −u, differentiated by autograd through every step."""
    v = -u
    for _ in range(n):
        v = -warp(u, v)
    return v


def test_implicit_gradient_matches_unrolled_autograd(rng: np.random.Generator) -> None:
    u0 = smooth_field(rng, (10, 11, 9), amp=1.2, sigma=2.0).double()
    weights = torch.from_numpy(rng.standard_normal(u0.shape))
    tight = SolverSettings(tol=1e-12, max_iter=300)
    tight_bwd = SolverSettings(tol=1e-12, criterion="rel_l2", max_iter=300)

    u = u0.clone().requires_grad_(True)
    v = invert_displacement(u, forward=tight, backward=tight_bwd)
    (v.double() * weights).sum().backward()
    implicit = u.grad.double()

    u_ref = u0.clone().requires_grad_(True)
    v_ref = _unrolled_inverse(u_ref.float(), 150).double()
    (v_ref * weights).sum().backward()
    unrolled = u_ref.grad.double()

    assert torch.allclose(v.double(), v_ref, atol=1e-5)
    rel = (implicit - unrolled).norm() / unrolled.norm()
    assert rel < 1e-3
    # The default (loose, rel-L2 1e-2) adjoint solve stays close too.
    u_def = u0.clone().requires_grad_(True)
    (invert_displacement(u_def).double() * weights).sum().backward()
    assert (u_def.grad.double() - unrolled).norm() / unrolled.norm() < 0.05


def test_float64_fields_are_inverted_in_float64(rng: np.random.Generator) -> None:
    u = smooth_field(rng, (16, 16, 16), amp=2.0, sigma=3.0).double()
    v = invert_displacement(u, forward=SolverSettings(tol=1e-12, max_iter=500))
    assert v.dtype == torch.float64
    # A residual far below float32 resolution (~1e-6 voxel at these coordinates): the solve ran in float64.
    assert compose(u, v).abs().max() < 1e-10


def test_inversion_runs_in_float32_under_low_precision_input(rng: np.random.Generator) -> None:
    u = smooth_field(rng, (12, 12, 12), amp=1.0, sigma=2.0)
    v = invert_displacement(u.to(torch.bfloat16))
    assert v.dtype == torch.bfloat16
    assert (v.float() - invert_displacement(u)).abs().max() < 0.02
