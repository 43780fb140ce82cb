"""A second, deliberately literal implementation of the evaluation metrics (tests and benchmarks only).

Written step by step from ``spec/evaluation-and-data.md`` §1–§5, independently of
``dirbench.metrics``: full-volume boolean masks per label, ``scipy.ndimage.map_coordinates`` /
``correlate`` as the official evaluators call them, explicit enumeration of surface elements with a
k-d tree for surface distances and closed-form surfel areas, ``np.linalg.det`` on explicitly built
Jacobian matrices for every tetrahedron. Slow on purpose; never imported by the package.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

# --------------------------------------------------------------------------- warp, Dice


def warp_labels(moving: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """``map_coordinates(moving, identity + disp, order=0)`` with float64 coordinates (official)."""
    disp = np.asarray(disp, np.float64)
    identity = np.meshgrid(*[np.arange(n) for n in disp.shape[:3]], indexing="ij")
    return ndi.map_coordinates(moving, identity + np.transpose(disp, (3, 0, 1, 2)), order=0)


def dice(fixed: np.ndarray, moving: np.ndarray, warped: np.ndarray, labels) -> np.ndarray:
    out = []
    for lab in labels:
        if (fixed == lab).sum() == 0 or (moving == lab).sum() == 0:
            out.append(np.nan)
            continue
        a, b = fixed == lab, warped == lab
        out.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    return np.array(out, dtype=np.float64)


# --------------------------------------------------------------------------- surfel areas (closed form)

SQRT2, SQRT3 = math.sqrt(2.0), math.sqrt(3.0)
# Kernel weight of corner (o0, o1, o2): DeepMind's [[[128, 64], [32, 16]], [[8, 4], [2, 1]]].
KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
CORNERS = list(product((0, 1), repeat=3))


def _adjacent(a, b) -> bool:
    return sum(x != y for x, y in zip(a, b, strict=True)) == 1


def _components(corners: list) -> list[list]:
    comps: list[list] = []
    for c in corners:
        touching = [comp for comp in comps if any(_adjacent(c, d) for d in comp)]
        merged = [c]
        for comp in touching:
            merged += comp
            comps.remove(comp)
        comps.append(merged)
    return comps


def _component_area(comp: list) -> float:
    """Marching-cubes surface area of a connected group of ≤ 4 cube corners (unit cube), in closed form.

    1 corner: a corner triangle √3/8. 2 (an edge): a √2/2 × 1 rectangle. 3 (an L on a face): the
    pentagon split into the mid-plane triangle (1/2), one √3/4 and one √3/8 triangle. 4 on a face: the
    unit square. 4 as a "star" (one corner and its 3 neighbours): the regular hexagon, 3√3/4. 4 as a
    zig-zag path: triangles √3/8 + 3√3/8 + 2 × √2/4.
    """
    n = len(comp)
    if n == 1:
        return SQRT3 / 8
    if n == 2:
        return SQRT2 / 2
    if n == 3:
        return 0.5 + SQRT3 / 4 + SQRT3 / 8
    assert n == 4
    if any(len({c[axis] for c in comp}) == 1 for axis in range(3)):
        return 1.0
    if any(sum(_adjacent(c, d) for d in comp) == 3 for c in comp):
        return 3 * SQRT3 / 4
    return SQRT3 / 2 + SQRT2 / 2


def area_table_unit() -> np.ndarray:
    """Surfel area per neighbour code for 1 mm voxels: the smaller of the inside/outside corner sets."""
    table = np.zeros(256)
    for code in range(256):
        inside = [c for c in CORNERS if code & int(KERNEL[c])]
        minority = inside if len(inside) <= 4 else [c for c in CORNERS if c not in inside]
        table[code] = sum(_component_area(comp) for comp in _components(minority))
    return table


# --------------------------------------------------------------------------- HD95


def _surfels(mask: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Explicit surface elements of ``mask`` on the corner lattice: positions ``[N, 3]`` and areas ``[N]``.

    Lattice point q (in a volume padded by one zero voxel on every side) looks at the 2×2×2 voxels
    q + o, o ∈ {0, 1}³, and carries the code Σ KERNEL[o] · mask[q + o].
    """
    padded = np.pad(mask.astype(np.int64), 1)
    n = [s - 1 for s in padded.shape]
    code = np.zeros(n, np.int64)
    for o in CORNERS:
        code += KERNEL[o] * padded[o[0] : o[0] + n[0], o[1] : o[1] + n[1], o[2] : o[2] + n[2]]
    positions, areas = [], []
    for q in np.argwhere((code != 0) & (code != 255)):
        positions.append(q)
        areas.append(table[code[tuple(q)]])
    return np.array(positions, dtype=np.float64).reshape(-1, 3), np.array(areas)


def robust_hausdorff(gt: np.ndarray, pred: np.ndarray, percent: float = 95.0) -> float:
    """DeepMind robust Hausdorff (1 mm voxels), both masks full-size booleans, via explicit surfels."""
    table = area_table_unit()
    box = np.argwhere(gt | pred)
    lo, hi = box.min(0), box.max(0) + 1
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    pos_g, area_g = _surfels(gt[crop], table)
    pos_p, area_p = _surfels(pred[crop], table)
    directed = []
    for pos_a, area_a, pos_b in ((pos_g, area_g, pos_p), (pos_p, area_p, pos_g)):
        if len(pos_a) == 0 or len(pos_b) == 0:
            directed.append(math.inf)
            continue
        dist, _ = cKDTree(pos_b).query(pos_a)
        pairs = sorted(zip(dist.tolist(), area_a.tolist(), strict=True))
        d_sorted = np.array([p[0] for p in pairs])
        a_sorted = np.array([p[1] for p in pairs])
        cum = np.cumsum(a_sorted) / np.sum(a_sorted)
        idx = int(np.searchsorted(cum, percent / 100.0))
        directed.append(d_sorted[min(idx, len(d_sorted) - 1)])
    return max(directed)


def hd95(fixed: np.ndarray, moving: np.ndarray, warped: np.ndarray, labels) -> np.ndarray:
    out = []
    for lab in labels:
        if (fixed == lab).sum() == 0 or (moving == lab).sum() == 0:
            out.append(np.nan)
        elif (warped == lab).sum() == 0:
            out.append(math.inf)
        else:
            out.append(robust_hausdorff(fixed == lab, warped == lab))
    return np.array(out, dtype=np.float64)


# --------------------------------------------------------------------------- Jacobians


def jacobian_l2r(disp: np.ndarray) -> np.ndarray:
    """Learn2Reg |J|: correlate u with [-0.5, 0, 0.5] (constant 0), + I, crop 2, explicit expansion.

    ``jac[a][c]`` = d u_c / d x_a (+ δ); the expansion is the one written out in the official code.
    """
    u = np.transpose(np.asarray(disp, np.float64), (3, 0, 1, 2))
    jac = [[None] * 3 for _ in range(3)]
    for a in range(3):
        kernel = np.array([-0.5, 0.0, 0.5]).reshape([3 if k == a else 1 for k in range(3)])
        for c in range(3):
            jac[a][c] = ndi.correlate(u[c], kernel, mode="constant", cval=0.0)[2:-2, 2:-2, 2:-2] + (a == c)
    (a00, a01, a02), (a10, a11, a12), (a20, a21, a22) = jac
    return a00 * (a11 * a22 - a12 * a21) - a10 * (a01 * a22 - a02 * a21) + a20 * (a01 * a12 - a02 * a11)


def sdlogj(disp: np.ndarray) -> float:
    return float(np.log(np.clip(jacobian_l2r(disp) + 3, 1e-9, 1e9)).std())


def sdlogj_raw(disp: np.ndarray) -> float:
    return float(np.log(np.clip(jacobian_l2r(disp), 1e-9, 1e9)).std())


def _phi(disp: np.ndarray) -> np.ndarray:
    """φ = identity + u, ``[X, Y, Z, 3]`` float64, edge-padded by one voxel (scipy ``mode='nearest'``)."""
    disp = np.asarray(disp, np.float64)
    identity = np.stack(np.meshgrid(*[np.arange(n) for n in disp.shape[:3]], indexing="ij"), axis=-1)
    return np.pad(disp + identity, ((1, 1), (1, 1), (1, 1), (0, 0)), mode="edge")


def _at(phi_padded: np.ndarray, offset) -> np.ndarray:
    """φ(v + offset) for every voxel v of the one-voxel cropped volume."""
    n = [s - 2 for s in phi_padded.shape[:3]]
    sl = tuple(slice(2 + o, 2 + o + k - 2) for o, k in zip(offset, n, strict=True))
    return phi_padded[sl]


def tetrahedron_determinants(disp: np.ndarray) -> dict[str, np.ndarray]:
    """The 11 determinant maps of the digital-diffeomorphism measures on the one-voxel crop.

    Rows of each Jacobian (row a = difference along axis a): '0' central (φ(v+e)-φ(v-e))/2, '+' forward
    φ(v+e)-φ(v), '-' backward φ(v)-φ(v-e);
    'J*1' rows φ(v-ex-ey)-φ(v), φ(v-ex-ez)-φ(v), φ(v-ey-ez)-φ(v);
    'J*2' rows φ(v+ex+ey)-φ(v), φ(v+ey+ez)-φ(v), φ(v+ex+ez)-φ(v).
    """
    phi = _phi(disp)
    e = np.eye(3, dtype=int)
    zero = (0, 0, 0)
    out = {}
    for name in ["000"] + ["".join(s) for s in product("+-", repeat=3)]:
        rows = []
        for a, s in enumerate(name):
            if s == "0":
                rows.append((_at(phi, e[a]) - _at(phi, -e[a])) / 2)
            elif s == "+":
                rows.append(_at(phi, e[a]) - _at(phi, zero))
            else:
                rows.append(_at(phi, zero) - _at(phi, -e[a]))
        out[name] = np.linalg.det(np.stack(rows, axis=-2))
    star1 = [(-1, -1, 0), (-1, 0, -1), (0, -1, -1)]
    star2 = [(1, 1, 0), (0, 1, 1), (1, 0, 1)]
    for name, offsets in (("J*1", star1), ("J*2", star2)):
        rows = [_at(phi, o) - _at(phi, zero) for o in offsets]
        out[name] = np.linalg.det(np.stack(rows, axis=-2))
    return out


def ndv_and_nondiff_voxels(disp: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    """(NDV %, %|J|≤0) on the one-voxel cropped mask.

    NDV: Σ over the mask and the 10 tetrahedra of 0.5 · max(-det, 0) / 6, divided by Σ mask;
    %|J|≤0: the central-difference determinant '000' ≤ 0.
    """
    dets = tetrahedron_determinants(disp)
    m = np.ones(dets["000"].shape, bool) if mask is None else np.asarray(mask, bool)[1:-1, 1:-1, 1:-1]
    volume = 0.0
    for name, det in dets.items():
        if name != "000":
            volume += float(np.sum(0.5 * np.maximum(-det, 0) / 6 * m))
    return 100 * volume / m.sum(), 100 * float(np.sum((dets["000"] <= 0) & m)) / m.sum()


def ndv(disp: np.ndarray, mask: np.ndarray | None) -> float:
    return ndv_and_nondiff_voxels(disp, mask)[0]


def nondiff_voxels(disp: np.ndarray, mask: np.ndarray | None) -> float:
    return ndv_and_nondiff_voxels(disp, mask)[1]


# --------------------------------------------------------------------------- TRE


def tre(fixed_lms: np.ndarray, moving_lms: np.ndarray, disp: np.ndarray, spacing=1.0) -> float:
    """LUMIR ``calc_TRE``: NN-warp the moving landmark volume, centroids per id, mean distance."""
    warped = warp_labels(moving_lms, disp)
    xv, yv, zv = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in fixed_lms.shape], indexing="ij")
    errors = []
    for lab in np.unique(fixed_lms)[1:]:
        pos = []
        for vol in (warped, fixed_lms):
            m = (vol == lab).astype(np.float32)
            with np.errstate(invalid="ignore"):
                pos.append(np.array([np.sum(m * g) / np.sum(m) for g in (xv, yv, zv)]))
        errors.append(np.sqrt(np.sum(((pos[0] - pos[1]) * spacing) ** 2)))
    return float(np.mean(errors))
