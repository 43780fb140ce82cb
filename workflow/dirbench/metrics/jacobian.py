"""Jacobian-based regularity metrics: SDlogJ, non-diffeomorphic volume and folded voxels, from one slab pass.

Definitions (``spec/evaluation-and-data.md`` §3): the Learn2Reg evaluator (MDL-UzL/L2R ``evaluation/``) and
the digital-diffeomorphism measures of Liu, Chen, Wei, Carass & Prince, "On finite difference Jacobian
computation in deformable image registration", IJCV 2024 (LUMIR's NDV).

- :func:`compute_sdlogj`: Learn2Reg SDlogJ, std of ``log(clip(|J| + 3, 1e-9, 1e9))`` over the field cropped
  by two voxels, |J| from central differences of u (the "+3" is the official code's);
  :func:`compute_sdlogj_raw` omits the "+3".
- :func:`compute_ndv`: non-diffeomorphic volume (%): the 10 tetrahedral Jacobian determinants of
  φ = id + u, ``Σ max(-det, 0) / 12`` over the one-voxel cropped mask, divided by the mask size.
- :func:`compute_nondiff_voxels`: % of mask voxels whose central-difference |J| is ≤ 0.

Values: SDlogJ and |J| are bit-identical to the official code for float32 fields; NDV agrees to float64
rounding (~1e-15 relative). Speed (:func:`jacobian_pass`, one pass shared by all of them): cache-sized
slabs with contiguous shifted differences, and a float32 screen that hands every voxel whose tetrahedral
determinants may be ≤ 0 to the exact float64 formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from dirbench.metrics.base import MetricValue, PairData
from dirbench.metrics.utils import as_field, parallel_map, slabs

__all__ = [
    "JacobianResult",
    "compute_ndv",
    "compute_nondiff_voxels",
    "compute_sdlogj",
    "compute_sdlogj_raw",
    "jacobian_determinant",
    "jacobian_pass",
    "ndv_mask",
    "pair_ndv",
    "pair_nondiff_voxels",
    "pair_sdlogj",
    "pair_sdlogj_raw",
]

_JAC_SLAB = 2  # x-planes per slab of the Jacobian pass (its float64 temporaries stay in cache)


def _det3(a00, a01, a02, a10, a11, a12, a20, a21, a22):
    """The official 3×3 expansion (Learn2Reg ``jacobian_determinant``, DD ``calc_J_i``), same order.

    ``aRC``: row R = derivative axis, column C = component.
    """
    return a00 * (a11 * a22 - a12 * a21) - a10 * (a01 * a22 - a02 * a21) + a20 * (a01 * a12 - a02 * a11)


# The 10 tetrahedra of the digital-diffeomorphism measures, each as its three Jacobian rows (row a is
# a difference of φ along direction a), a row given as (end offset, start offset): the 8 corner
# tetrahedra '+x+y+z', '+x+y-z', ..., '-x-y-z' (forward φ(v+e)-φ(v) or backward φ(v)-φ(v-e)), then
# J*1 (rows φ(v-ex-ey)-φ(v), φ(v-ex-ez)-φ(v), φ(v-ey-ez)-φ(v)) and J*2 (rows φ(v+ex+ey)-φ(v),
# φ(v+ey+ez)-φ(v), φ(v+ex+ez)-φ(v)). For the identity the corner ones are 1 and J*1, J*2 are 2.
_Offset = tuple[int, int, int]
_E: tuple[_Offset, ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
_MINUS_E: tuple[_Offset, ...] = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
_ZERO: _Offset = (0, 0, 0)
_TETRA_ROWS: list[list[tuple[_Offset, _Offset]]] = [
    [(_E[a], _ZERO) if s > 0 else (_ZERO, _MINUS_E[a]) for a, s in enumerate(signs)]
    for signs in product((1, -1), repeat=3)
] + [
    [((-1, -1, 0), _ZERO), ((-1, 0, -1), _ZERO), ((0, -1, -1), _ZERO)],
    [((1, 1, 0), _ZERO), ((0, 1, 1), _ZERO), ((1, 0, 1), _ZERO)],
]


class _Slab:
    """Planes ``[x0, x1)`` of a field, plus one halo plane each side, in a flat zero-padded layout.

    Voxel (x, y, z) sits at flat position ``((x - x0 + 1) Y + y) Z + z`` of each component row, so a
    neighbour offset (dx, dy, dz) is the constant shift ``(dx Y + dy) Z + dz`` and a finite
    difference over the whole slab is one contiguous numpy operation. Positions on the y/z faces
    read wrapped neighbours; their values are never used.
    """

    def __init__(self, disp: np.ndarray, x0: int, x1: int) -> None:
        _, self.Y, self.Z = disp.shape[:3]
        self.P = self.Y * self.Z
        self.T = x1 - x0
        self.pad = self.Z + 1  # the diagonal offsets reach one row + 1 beyond the halo planes
        n = (self.T + 2) * self.P
        self.buf = np.zeros((3, n + 2 * self.pad), disp.dtype)
        self.buf[:, self.pad : self.pad + n] = np.moveaxis(disp[x0 - 1 : x1 + 1], -1, 0).reshape(3, n)

    def diff(self, c: int, end: _Offset, start: _Offset, lo: int, hi: int, dtype: Any) -> np.ndarray:
        """Component c of φ(v + end) - φ(v + start) for the flat positions v in ``[lo, hi)``."""
        s_end = self.pad + (end[0] * self.Y + end[1]) * self.Z + end[2]
        s_start = self.pad + (start[0] * self.Y + start[1]) * self.Z + start[2]
        row = self.buf[c]
        out = np.subtract(row[lo + s_end : hi + s_end], row[lo + s_start : hi + s_start], dtype=dtype)
        if end[c] != start[c]:
            out += end[c] - start[c]
        return out

    def tetra_dets(self, pos: np.ndarray) -> np.ndarray:
        """The 10 tetrahedral determinants ``[10, N]`` at flat positions ``pos``, float64, official formula.

        For float32 fields a float64 difference of u plus the integer identity step equals the
        official float64 difference of φ = u + identity exactly.
        """
        values: dict[tuple[_Offset, int], np.ndarray] = {}

        def at(offset: _Offset, c: int) -> np.ndarray:
            if (offset, c) not in values:
                shift = self.pad + (offset[0] * self.Y + offset[1]) * self.Z + offset[2]
                values[offset, c] = self.buf[c].take(pos + shift).astype(np.float64)
            return values[offset, c]

        dets = np.empty((len(_TETRA_ROWS), len(pos)))
        for t, rows in enumerate(_TETRA_ROWS):
            entries = []
            for end, start in rows:
                for c in range(3):
                    diff = at(end, c) - at(start, c)
                    if end[c] != start[c]:
                        diff += end[c] - start[c]
                    entries.append(diff)
            dets[t] = _det3(*entries)
        return dets


@dataclass
class JacobianResult:
    """What one :func:`jacobian_pass` computed (the outputs not asked for stay None / 0)."""

    det: np.ndarray | None = None  # central |J| on the [2:-2] crop
    log_j: np.ndarray | None = None  # log(clip(|J| + 3)) on the [2:-2] crop
    log_j_raw: np.ndarray | None = None  # log(clip(|J|)) on the [2:-2] crop
    folded: int = 0  # mask voxels with central |J| <= 0
    ndv_sum: float = 0.0  # Σ over the mask and the 10 tetrahedra of 0.5 max(-det, 0) / 6
    mask_size: int = 0

    @property
    def ndv(self) -> float:
        """Non-diffeomorphic volume in % of the mask (NaN for an empty mask)."""
        return 100.0 * self.ndv_sum / self.mask_size if self.mask_size else math.nan

    @property
    def nondiff_voxels(self) -> float:
        """% of the mask with central |J| ≤ 0 (NaN for an empty mask)."""
        return 100.0 * self.folded / self.mask_size if self.mask_size else math.nan


def jacobian_pass(
    disp: np.ndarray,
    mask: np.ndarray | None,
    *,
    want_det: bool = False,
    want_sd: bool = False,
    want_raw: bool = False,
    want_ndv: bool = False,
    want_folds: bool = False,
    threads: int | None = None,
) -> JacobianResult:
    """One slab-wise pass over the field: central |J| (official formula, float64), logs, folds, NDV.

    Args:
        disp: ``[X, Y, Z, 3]`` float32 (or float64).
        mask: ``[X-2, Y-2, Z-2]`` bool (already cropped by one voxel) or None (every voxel).
    """
    disp = as_field(disp)
    X, Y, Z = disp.shape[:3]
    if min(X, Y, Z) < 5:
        raise ValueError(f"field {disp.shape[:3]} too small: the Jacobian metrics crop 2 voxels per face")
    size = (X - 2) * (Y - 2) * (Z - 2) if mask is None else int(np.count_nonzero(mask))
    res = JacobianResult(mask_size=size)
    crop2 = (X - 4, Y - 4, Z - 4)
    res.det = np.empty(crop2) if want_det else None
    res.log_j = np.empty(crop2) if want_sd else None
    res.log_j_raw = np.empty(crop2) if want_raw else None

    @np.errstate(over="ignore", invalid="ignore")  # wrapped face positions; errstate is per thread
    def run(x0: int, x1: int) -> tuple[int, float]:
        slab = _Slab(disp, x0, x1)
        T, P = slab.T, slab.P
        msk = np.zeros((T, Y, Z), bool)
        msk[:, 1:-1, 1:-1] = True if mask is None else mask[x0 - 1 : x1 - 1]
        folds = 0
        if want_det or want_sd or want_raw or want_folds:
            # u(v + e_a) - u(v - e_a) (+ 2 on the diagonal) is exactly twice the official entry ½ Δu + δ,
            # so the official expansion of these entries is exactly 8 |J|.
            hi = (T + 1) * P
            entries = [slab.diff(c, _E[a], _MINUS_E[a], P, hi, float) for a in range(3) for c in range(3)]
            jac = _det3(*entries)
            jac *= 0.125
            jac = jac.reshape(T, Y, Z)
            if want_folds:
                folds = int(np.count_nonzero((jac <= 0) & msk))
            a, b = max(x0, 2), min(x1, X - 2)
            if a < b:
                inner = jac[a - x0 : b - x0, 2:-2, 2:-2]
                if res.det is not None:
                    res.det[a - 2 : b - 2] = inner
                if res.log_j is not None:
                    np.log(np.clip(inner + 3.0, 1e-9, 1e9), out=res.log_j[a - 2 : b - 2])
                if res.log_j_raw is not None:
                    np.log(np.clip(inner, 1e-9, 1e9), out=res.log_j_raw[a - 2 : b - 2])
        return folds, _ndv_slab(slab, msk) if want_ndv else 0.0

    results = parallel_map(run, slabs(1, X - 1, _JAC_SLAB), threads)
    res.folded = sum(r[0] for r in results)
    res.ndv_sum = math.fsum(r[1] for r in results)
    return res


def _ndv_slab(slab: _Slab, msk: np.ndarray) -> float:
    """Σ over the slab's mask voxels and the 10 tetrahedra of ``0.5 max(-det, 0) / 6``.

    Screen: the 10 determinants are evaluated in the field's precision (float32 for float32 fields)
    and compared with ``τ = 128 eps (M + 1)³``, M the largest |entry| of the slab. Each entry is one
    rounded difference of stored values plus an integer step (error ≤ 2 ε (M + 1), ε = eps / 2) and
    the 3×3 expansion adds ≤ 4 roundings per term, so a computed determinant is within
    ~61 ε (M + 1)³ < τ / 4 of the exact one. Every voxel whose determinants may be ≤ 0 is then
    evaluated exactly (float64, official formula), so the sum equals the official one up to the
    order of the float64 additions.
    """
    Z, P = slab.Z, slab.P
    rows = np.flatnonzero(msk.any(axis=(0, 2)))
    if not len(rows):
        return 0.0
    lo, hi = P + int(rows[0]) * Z, slab.T * P + (int(rows[-1]) + 1) * Z
    n, dtype = hi - lo, slab.buf.dtype
    # forward differences F[a][c] on [lo - s_a, hi), s_a the flat step of axis a; the backward ones
    # are the same arrays shifted by s_a
    steps = (P, Z, 1)
    F = [[slab.diff(c, _E[a], _ZERO, lo - steps[a], hi, dtype) for c in range(3)] for a in range(3)]
    star = [[slab.diff(c, e, s, lo, hi, dtype) for e, s in tet for c in range(3)] for tet in _TETRA_ROWS[8:]]
    entries = [*(f for r in F for f in r), *(x for t in star for x in t)]
    big = max(max(float(x.max()), -float(x.min())) for x in entries)
    if not math.isfinite(big) or big > 1e6:  # float32 products could overflow: evaluate all exactly
        risky = np.ones(n, bool)
    else:
        tau = dtype.type(128.0 * float(np.finfo(dtype).eps) * (big + 1.0) ** 3)

        def row(a: int, forward: bool) -> list[np.ndarray]:
            start = steps[a] if forward else 0
            return [f[start : start + n] for f in F[a]]

        mn = None
        for sy, sz in product((True, False), repeat=2):
            y0, y1, y2 = row(1, sy)
            z0, z1, z2 = row(2, sz)
            c0, c1, c2 = y1 * z2, y2 * z0, y0 * z1  # Y × Z
            c0 -= y2 * z1
            c1 -= y0 * z2
            c2 -= y1 * z0
            for sx in (True, False):
                x_0, x_1, x_2 = row(0, sx)
                det = x_0 * c0
                det += x_1 * c1
                det += x_2 * c2
                mn = det if mn is None else np.minimum(mn, det, out=mn)
        for rows_t in star:
            np.minimum(mn, _det3(*rows_t), out=mn)
        risky = mn < tau
    risky &= msk.reshape(-1)[lo - P : hi - P]
    pos = np.flatnonzero(risky)
    if not len(pos):
        return 0.0
    dets = slab.tetra_dets(pos + lo)
    return float(np.sum(-0.5 * np.minimum(dets, 0.0) / 6.0))


def _crop1_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} differs from the field's {tuple(shape)}")
    return mask[1:-1, 1:-1, 1:-1].astype(bool, copy=False)


def _masked_std(values: np.ndarray, mask: np.ndarray | None) -> float:
    if mask is None:
        return float(values.std())
    mask = np.asarray(mask, bool)[2:-2, 2:-2, 2:-2]
    if mask.shape != values.shape:
        raise ValueError(f"mask shape {tuple(n + 4 for n in mask.shape)} differs from the field's")
    return float(values[mask].std()) if mask.any() else math.nan


def jacobian_determinant(disp: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Learn2Reg |J|, float64 ``[X-4, Y-4, Z-4]``: central differences of u, + identity, cropped by 2.

    Bit-identical to MDL-UzL/L2R ``jacobian_determinant`` for float32 fields.
    """
    return jacobian_pass(disp, None, want_det=True, threads=threads).det  # type: ignore[return-value]


def compute_sdlogj(disp: np.ndarray, mask: np.ndarray | None = None, threads: int | None = None) -> float:
    """Learn2Reg SDlogJ: ``std(log(clip(|J| + 3, 1e-9, 1e9)))`` (ddof 0) over the 2-voxel crop.

    Args:
        disp: ``[X, Y, Z, 3]`` voxel displacement.
        mask: optional ``[X, Y, Z]`` bool; the std is then over the mask's cropped voxels (the
            evaluator's ``masked_evaluation``; the OASIS configs use none).
        threads: worker threads.

    The "+3" is in the official code (MDL-UzL/L2R issue #7); :func:`compute_sdlogj_raw` omits it.
    """
    res = jacobian_pass(disp, None, want_sd=True, threads=threads)
    return _masked_std(res.log_j, mask)  # type: ignore[arg-type]


def compute_sdlogj_raw(disp: np.ndarray, mask: np.ndarray | None = None, threads: int | None = None) -> float:
    """``std(log(clip(|J|, 1e-9, 1e9)))`` over the 2-voxel crop: SDlogJ without the official "+3"."""
    res = jacobian_pass(disp, None, want_raw=True, threads=threads)
    return _masked_std(res.log_j_raw, mask)  # type: ignore[arg-type]


def compute_ndv(disp: np.ndarray, mask: np.ndarray | None = None, threads: int | None = None) -> float:
    """Non-diffeomorphic volume in % (digital diffeomorphism, Liu et al. IJCV 2024; LUMIR's NDV).

    Args:
        disp: ``[X, Y, Z, 3]`` voxel displacement; φ = identity + disp.
        mask: ``[X, Y, Z]`` bool or None (every voxel). LUMIR 2024 uses ``moving_image > 0``
            (:func:`ndv_mask`); the measure uses ``mask[1:-1, 1:-1, 1:-1]``.
        threads: worker threads.

    Returns:
        ``100 Σ_mask Σ_t max(-det_t, 0) / 12 / Σ mask`` over the 10 tetrahedral determinants
        (8 corner tetrahedra from one-sided differences, 2 central ones) on the one-voxel crop;
        NaN for an empty mask.
    """
    disp = as_field(disp)
    return jacobian_pass(disp, _crop1_mask(mask, disp.shape[:3]), want_ndv=True, threads=threads).ndv


def compute_nondiff_voxels(disp: np.ndarray, mask: np.ndarray | None = None, threads: int | None = None) -> float:
    """% of the one-voxel cropped mask whose central-difference |J| is ≤ 0 (the usual "%|J|≤0").

    ``disp`` and ``mask`` as in :func:`compute_ndv`; NaN for an empty mask.
    """
    disp = as_field(disp)
    return jacobian_pass(disp, _crop1_mask(mask, disp.shape[:3]), want_folds=True, threads=threads).nondiff_voxels


def ndv_mask(
    kind: str, fixed_image: np.ndarray | None = None, moving_image: np.ndarray | None = None
) -> np.ndarray | None:
    """The NDV mask ``[X, Y, Z]`` bool: ``"moving"`` → moving image > 0 (LUMIR 2024), ``"fixed"`` →
    fixed image > 0 (LUMIR 2025), ``"none"`` → None (every voxel)."""
    if kind == "none":
        return None
    if kind not in ("moving", "fixed"):
        raise ValueError(f"NDV mask {kind!r}: expected moving, fixed or none")
    image = moving_image if kind == "moving" else fixed_image
    if image is None:
        raise ValueError(f"the NDV mask {kind!r} needs the {kind} image (or the mask 'none')")
    return np.asarray(image) > 0


# --------------------------------------------------------------------------- registry adapters

# The pass output each metric of this family reads; one pass computes all those of the wanted metrics.
_PASS_FLAGS = {"sdlogj": "want_sd", "sdlogj_raw": "want_raw", "ndv": "want_ndv", "nondiff_voxels": "want_folds"}
_MASKED = ("ndv", "nondiff_voxels")


def _pair_pass(pair: PairData) -> JacobianResult:
    """The pair's Jacobian pass, run once with the outputs of every wanted metric of this family."""

    def make() -> JacobianResult:
        flags = {flag: name in pair.wanted for name, flag in _PASS_FLAGS.items()}
        masked = any(name in pair.wanted for name in _MASKED)
        mask = ndv_mask(pair.ndv_mask_kind, pair.fixed_image, pair.moving_image) if masked else None
        return jacobian_pass(pair.disp, _crop1_mask(mask, pair.disp.shape[:3]), threads=pair.threads, **flags)

    return pair.shared("jacobian", make)


def pair_sdlogj(pair: PairData) -> MetricValue:
    """Registry adapter: :func:`compute_sdlogj` (unmasked, as the OASIS and LUMIR configs)."""
    return MetricValue(float(_pair_pass(pair).log_j.std()))  # type: ignore[union-attr]


def pair_sdlogj_raw(pair: PairData) -> MetricValue:
    """Registry adapter: :func:`compute_sdlogj_raw` (unmasked)."""
    return MetricValue(float(_pair_pass(pair).log_j_raw.std()))  # type: ignore[union-attr]


def pair_ndv(pair: PairData) -> MetricValue:
    """Registry adapter: :func:`compute_ndv` over the pair's NDV mask (NaN for an empty mask)."""
    return MetricValue(_pair_pass(pair).ndv)


def pair_nondiff_voxels(pair: PairData) -> MetricValue:
    """Registry adapter: :func:`compute_nondiff_voxels` over the pair's NDV mask (NaN for an empty mask)."""
    return MetricValue(_pair_pass(pair).nondiff_voxels)
