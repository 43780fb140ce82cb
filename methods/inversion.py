"""Fixed-point inversion of dense displacement fields with Anderson acceleration and implicit gradients.

The deformation inversion layer of Honkamaa & Marttinen, "Asymmetric image registration with deformation
inversion layer" / SITReg (MELBA 2024), used by SITReg and by DP-ConvIC (Liu, Ruan & Sheng, MIDL 2025).

For a displacement ``u`` (``φ(x) = x + u(x)``, voxel units, linear interpolation, border extrapolation as in
:func:`methods.spatial.warp`) the inverse displacement ``v`` solves the fixed-point equation

    ``v(x) = g(v)(x) = −u(x + v(x))``,  i.e. ``φ(x + v(x)) = x``,

which converges when ``u`` is a contraction (Lipschitz constant < 1; guaranteed by the B-spline control-
point bounds of :mod:`methods.dp_ic`). It is solved from ``v₀ = −u`` with Anderson acceleration (memory 4).

Gradients do not backpropagate through the iterations. At the solution ``v* = g(v*, u)`` the implicit
function theorem gives ``∂L/∂u = (∂g/∂u)ᵀ y`` where ``y`` solves the adjoint fixed-point equation
``y = (∂g/∂v)ᵀ y + ∂L/∂v*``, solved by the same Anderson solver from ``y₀ = 0``.

Stop rules (upstream defaults of ``deformation_inversion_layer``; iteration = one evaluation of the map):
forward ``max |g(v) − v| < 1e-2`` voxel, backward ``‖g(y) − y‖₂ / (1e-5 + ‖g(y)‖₂) < 1e-2``, both with at
least 2 and at most 50 iterations, all configurable through :class:`SolverSettings`. The Anderson least-squares
problem gets the upstream absolute ridge 1e-4 (``AndersonSolverArguments.matrix_epsilon``).

The solve runs in the input's dtype, or float32 for narrower inputs (bf16 / fp16 coordinates cannot resolve a
voxel), with autocast disabled: a float64 model inverts in float64, as ``deformation_inversion_layer`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from methods.spatial import warp

__all__ = [
    "BACKWARD_SOLVER",
    "FORWARD_SOLVER",
    "SolverSettings",
    "fixed_point_solve",
    "invert_displacement",
]


@dataclass(frozen=True)
class SolverSettings:
    """Fixed-point solver settings.

    Attributes:
        tol: stop threshold of ``criterion``.
        criterion: ``"max_abs"`` (max over all elements of ``|g(x) − x|``) or ``"rel_l2"``
            (``‖g(x) − x‖ / (eps + ‖g(x)‖)`` over the whole batch).
        min_iter: fewest evaluations of ``g`` before the criterion is checked.
        max_iter: most evaluations of ``g``.
        memory: Anderson memory (how many past iterates are mixed); 1 gives plain iteration ``x ← g(x)``.
        regularisation: absolute ridge added to the diagonal of the residual Gram matrix ``G_ij = ⟨g_i, g_j⟩``
            (sums over the whole field) of the Anderson least-squares problem, as upstream (1e-4).
        eps: the ``eps`` of ``"rel_l2"``.
    """

    tol: float = 1e-2
    criterion: Literal["max_abs", "rel_l2"] = "max_abs"
    min_iter: int = 2
    max_iter: int = 50
    memory: int = 4
    regularisation: float = 1e-4
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.criterion not in ("max_abs", "rel_l2"):
            raise ValueError(f"unknown criterion {self.criterion!r}; expected 'max_abs' or 'rel_l2'")
        if self.memory < 1 or self.max_iter < 1 or self.min_iter > self.max_iter:
            raise ValueError(f"invalid solver settings {self}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for model configs)."""
        return asdict(self)


#: Forward solve of the inversion layer: max-abs change < 1e-2 voxel, 2..50 iterations, memory 4.
FORWARD_SOLVER = SolverSettings(tol=1e-2, criterion="max_abs")
#: Backward (adjoint) solve: relative L2 change < 1e-2, 2..50 iterations, memory 4.
BACKWARD_SOLVER = SolverSettings(tol=1e-2, criterion="rel_l2")


def _converged(settings: SolverSettings, residual: torch.Tensor, value: torch.Tensor) -> bool:
    if settings.criterion == "max_abs":
        return bool(residual.abs().max() < settings.tol)
    return bool(residual.norm() / (settings.eps + value.norm()) < settings.tol)


def fixed_point_solve(
    fn: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, settings: SolverSettings
) -> tuple[torch.Tensor, int]:
    """Solve ``x = fn(x)`` by Anderson acceleration (Walker & Ni 2011; type II, mixing β = 1).

    Each step evaluates ``f_k = fn(x_k)`` with residual ``g_k = f_k − x_k``, then takes
    ``x_{k+1} = Σ_i α_i f_i`` over the last ``m`` steps, with ``α`` minimising ``‖Σ_i α_i g_i‖²`` subject to
    ``Σ_i α_i = 1`` (ridge ``regularisation`` on the Gram matrix; solved per batch element). The Gram
    matrix is updated incrementally, so a step costs ``m`` inner products plus one evaluation.

    Args:
        fn: the map, ``[B, …] → [B, …]``.
        x0: ``[B, …]`` initial iterate.
        settings: see :class:`SolverSettings`.

    Returns:
        ``(f_last, n)``: the last evaluation ``fn(x)`` and the number ``n`` of evaluations.
    """
    m = settings.memory
    batch = x0.shape[0]
    fs: list[torch.Tensor] = []
    gs: list[torch.Tensor] = []  # residuals, flattened per batch element
    gram = torch.zeros(batch, 0, 0, dtype=torch.float64, device=x0.device)
    x = x0
    for n in range(1, settings.max_iter + 1):
        f = fn(x)
        residual = f - x
        if n >= settings.min_iter and _converged(settings, residual, f):
            return f, n
        if n == settings.max_iter:
            break
        if m == 1:
            x = f
            continue
        g = residual.reshape(batch, -1)
        if len(gs) == m:  # drop the oldest step
            fs.pop(0)
            gs.pop(0)
            gram = gram[:, 1:, 1:]
        fs.append(f)
        gs.append(g)
        cross = torch.stack([(g * h).sum(dim=1) for h in gs], dim=1).to(torch.float64)  # [B, k]
        k = len(gs)
        new = torch.zeros(batch, k, k, dtype=torch.float64, device=x0.device)
        new[:, : k - 1, : k - 1] = gram
        new[:, k - 1, :] = cross
        new[:, :, k - 1] = cross
        gram = new
        eye = torch.eye(k, dtype=torch.float64, device=x0.device)
        rhs = torch.ones(batch, k, 1, dtype=torch.float64, device=x0.device)
        z = torch.linalg.solve(gram + settings.regularisation * eye, rhs)[..., 0]
        alpha = (z / z.sum(dim=1, keepdim=True)).to(f.dtype)  # [B, k]
        x = sum(alpha[:, i].view(batch, *([1] * (f.dim() - 1))) * fs[i] for i in range(k))
    return f, settings.max_iter


def _inverse_step(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g(v) = −u(x + v(x))``: linear interpolation, border extrapolation (``[B, 3, X, Y, Z]`` voxels)."""
    return -warp(u, v, mode="bilinear", padding_mode="border")


class _InvertDisplacement(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, u: torch.Tensor, forward_settings: SolverSettings, backward_settings: SolverSettings
    ) -> torch.Tensor:
        v, _ = fixed_point_solve(lambda v: _inverse_step(u, v), -u, forward_settings)
        ctx.save_for_backward(u, v)
        ctx.backward_settings = backward_settings  # type: ignore[attr-defined]
        return v

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad_v: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        u, v = ctx.saved_tensors  # type: ignore[attr-defined]
        settings: SolverSettings = ctx.backward_settings  # type: ignore[attr-defined]
        with torch.enable_grad(), torch.autocast(u.device.type, enabled=False):
            u_ = u.detach().requires_grad_(True)
            v_ = v.detach().requires_grad_(True)
            out = _inverse_step(u_, v_)

            def adjoint(y: torch.Tensor) -> torch.Tensor:
                return torch.autograd.grad(out, v_, y, retain_graph=True)[0] + grad_v

            y, _ = fixed_point_solve(adjoint, torch.zeros_like(grad_v), settings)
            (grad_u,) = torch.autograd.grad(out, u_, y)
        return grad_u, None, None


def invert_displacement(
    u: torch.Tensor,
    forward: SolverSettings = FORWARD_SOLVER,
    backward: SolverSettings = BACKWARD_SOLVER,
) -> torch.Tensor:
    """Inverse displacement of ``u``, differentiable by implicit differentiation.

    Args:
        u: ``[B, 3, X, Y, Z]`` (or ``[B, 2, X, Y]``) voxel displacement of ``φ = id + u``; must be a
            contraction for the iteration to converge (non-converged solves stop at ``max_iter``).
        forward: solver settings of the forward solve.
        backward: solver settings of the adjoint solve in the backward pass.

    Returns:
        ``v`` with ``φ(x + v(x)) ≈ x``, same shape and dtype as ``u`` (computed in ``u``'s dtype, at least
        float32).
    """
    dtype = u.dtype
    with torch.autocast(u.device.type, enabled=False):
        v = _InvertDisplacement.apply(u.to(torch.promote_types(dtype, torch.float32)), forward, backward)
    return v.to(dtype)
