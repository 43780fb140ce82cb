"""Literal second implementation of the symmetric, inverse-consistent pyramid (SITReg, DP-ConvIC), for tests.

Written from the spec (``spec/methods-dp.md`` §2(b) "Accumulation", ``spec/methods-baselines.md`` §5), not from
:mod:`methods.dp_ic`: numpy float64, one point at a time in spirit. It shares only the networks with the model
under test (the feature extractor, ``update_inputs`` and the update nets are called as they are); every
geometric step is its own:

- a map is a function of points ``p`` (``[3, N]`` full-resolution voxel coordinates); composition is
  function composition, evaluated lazily; a map is *stored on the grid* only where the spec says so, by
  evaluating it at the grid points and reading it elsewhere with ``scipy.ndimage.map_coordinates`` (order 1,
  ``mode="nearest"``, which is linear interpolation with border clamping);
- features are sampled at the level voxel centres ``X(i) = (i + 0.5)·s − 0.5`` mapped through ``L`` (image 1)
  and ``R`` (image 2), at level coordinates ``(p + 0.5)/s − 0.5``;
- control points ``0.99 · B_s · tanh(raw)`` are expanded with the cubic B-spline formula
  ``Σ_i c_i β³(t(x) − i)``, ``t(x) = (x + 0.5)/s − 0.5``, control points replicated beyond the border, times ``s``;
- each atom is inverted by plain fixed-point iteration ``v ← −u(x + v)`` to ``tol``.

``order="authors"`` is the corrected chain (``L⁻¹ ← φ_r(φ_f⁻¹(L⁻¹(x)))``, ``U``, ``U⁻¹`` never stored);
``order="stored-update"`` is the old one (``U⁻¹`` stored on the grid, then interpolated at ``L⁻¹(x)``), kept
to show that it is measurably different.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from scipy.ndimage import map_coordinates

Map = Callable[[np.ndarray], np.ndarray]
Order = Literal["authors", "stored-update"]

#: SITReg's invertibility bounds of the cubic B-spline control points, by upsampling factor.
BOUNDS = {1: 0.36, 2: 0.3854469526363808, 4: 0.39803114051999844, 8: 0.4007250760586097,
          16: 0.40175329749498856, 32: 0.40253633025170044}  # fmt: skip


def grid_points(shape: tuple[int, ...]) -> np.ndarray:
    """All voxel coordinates of ``shape``, ``[3, N]`` in C order."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")).reshape(3, -1)


def sample(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Linear interpolation with border clamping of ``volume`` ``[C, *shape]`` at ``points`` → ``[C, N]``."""
    return np.stack([map_coordinates(v, points, order=1, mode="nearest") for v in volume])


def stored(fn: Map, shape: tuple[int, ...]) -> Map:
    """``fn`` stored on the grid: its displacement at the grid points, read back by linear interpolation."""
    x = grid_points(shape)
    disp = (fn(x) - x).reshape(3, *shape)
    return lambda p: p + sample(disp, p)


def chain(*maps: Map) -> Map:
    """``maps[0] ∘ maps[1] ∘ …`` (the last one is applied first), lazily."""

    def composed(p: np.ndarray) -> np.ndarray:
        for m in reversed(maps):
            p = m(p)
        return p

    return composed


def identity(p: np.ndarray) -> np.ndarray:
    return p


def cubic_bspline(t: np.ndarray) -> np.ndarray:
    a = np.abs(t)
    return np.where(a <= 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def bspline_displacement(control: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """Full-resolution voxel displacement ``[3, *shape]`` of level-voxel control points ``[3, *level]``."""
    weights = []
    for n_out, n_ctrl in zip(shape, control.shape[1:], strict=True):
        t = (np.arange(n_out) + 0.5) / factor - 0.5
        w = np.zeros((n_out, n_ctrl))
        for j in range(int(np.floor(t.min())) - 2, int(np.ceil(t.max())) + 3):  # every knot in reach
            w[:, min(max(j, 0), n_ctrl - 1)] += cubic_bspline(t - j)
        weights.append(w)
    return factor * np.einsum("xi,yj,zk,cijk->cxyz", *weights, control, optimize=True)


def invert(disp: np.ndarray, tol: float, max_iter: int = 20000) -> np.ndarray:
    """Inverse displacement of ``disp`` ``[3, *shape]`` at the grid points by plain fixed-point iteration."""
    x = grid_points(disp.shape[1:])
    v = -disp.reshape(3, -1)
    for _ in range(max_iter):
        new = -sample(disp, x + v)
        change = np.abs(new - v).max()
        v = new
        if change < tol:
            return v.reshape(disp.shape)
    raise RuntimeError(f"fixed-point inversion did not reach {tol} in {max_iter} iterations")


def grid_map(disp: np.ndarray) -> Map:
    return lambda p: p + sample(disp, p)


def _features_through(feats: np.ndarray, mapping: Map, factor: int) -> np.ndarray:
    """Level features ``[C, *level]`` sampled at the level voxel centres mapped through ``mapping``."""
    level = feats.shape[1:]
    centres = grid_points(level) * factor + (factor - 1) / 2
    return sample(feats, (mapping(centres) + 0.5) / factor - 0.5).reshape(-1, *level)


@torch.no_grad()
def reference_forward(
    model: torch.nn.Module,
    image_1: torch.Tensor,
    image_2: torch.Tensor,
    tol: float = 1e-11,
    orders: tuple[Order, ...] = ("authors",),
) -> dict[Order, tuple[np.ndarray, np.ndarray]]:
    """``{order: (Φ12 − id, Φ21 − id)}``, each ``[3, X, Y, Z]`` float64 voxels, for one pair (batch size 1).

    ``model`` is a :class:`methods.dp_ic.SymmetricPyramid` (its ``features``, ``update_inputs``,
    ``update_nets`` and ``factors`` are used; nothing else of it). Its parameters should be float64. ``L`` and
    ``R`` (hence the features, the nets' outputs and the atoms) do not depend on the inverse chains, so one pass
    serves every order in ``orders``.
    """
    if image_1.shape[0] != 1:
        raise ValueError("the reference handles one pair at a time")
    if any(order not in ("authors", "stored-update") for order in orders):
        raise ValueError(f"unknown order in {orders}")
    shape = tuple(image_1.shape[2:])
    dtype = next(model.parameters()).dtype
    feats = [f.double().numpy() for f in model.features(image_1.to(dtype), image_2.to(dtype))]
    L: Map = identity
    R: Map = identity
    inverses: dict[Order, tuple[Map, Map]] = {order: (identity, identity) for order in orders}  # (L⁻¹, R⁻¹)
    for level in reversed(range(len(model.update_nets))):
        s = model.factors[level]
        a, b = (torch.from_numpy(_features_through(feats[level][i], m, s))[None].to(dtype) for i, m in ((0, L), (1, R)))
        in_f, in_r = model.update_inputs(level, a, b)
        controls = [
            0.99 * BOUNDS[s] * np.tanh(model.update_nets[level](x)[0].double().numpy()) for x in (in_f, in_r)
        ]
        phi_f, phi_r = (bspline_displacement(c, s, shape) for c in controls)
        f, r = grid_map(phi_f), grid_map(phi_r)
        f_inv, r_inv = grid_map(invert(phi_f, tol)), grid_map(invert(phi_r, tol))
        U = chain(f, r_inv)
        U_inv = chain(r, f_inv)
        L, R = stored(chain(L, U), shape), stored(chain(R, U_inv), shape)
        for order, (L_inv, R_inv) in inverses.items():
            if order == "authors":
                inverses[order] = stored(chain(U_inv, L_inv), shape), stored(chain(U, R_inv), shape)
            else:
                U_grid, U_inv_grid = stored(U, shape), stored(U_inv, shape)
                inverses[order] = stored(chain(U_inv_grid, L_inv), shape), stored(chain(U_grid, R_inv), shape)
    x = grid_points(shape)
    return {
        order: ((chain(L, R_inv)(x) - x).reshape(3, *shape), (chain(R, L_inv)(x) - x).reshape(3, *shape))
        for order, (L_inv, R_inv) in inverses.items()
    }
