"""Label sets, the evaluators' nearest-neighbour label warp, and the one-pass label histogram.

- :func:`warp_labels`: nearest-neighbour pull-back, identical to the Learn2Reg / LUMIR evaluators'
  ``scipy.ndimage.map_coordinates(moving, identity + disp, order=0)`` (mode constant, cval 0).
- :func:`label_counts`: per label, the voxels in the fixed, moving and warped maps and in fixed ∩ warped,
  from one chunked joint histogram (the counts behind Dice and the empty-label rules of HD95).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources

import numpy as np

from dirbench.metrics.base import PairData
from dirbench.metrics.utils import as_field, parallel_map, slabs

__all__ = [
    "OASIS_LABELS",
    "check_segs",
    "label_counts",
    "lumir_labels",
    "pair_label_counts",
    "parse_labels",
    "warp_labels",
]

#: OASIS (Learn2Reg task 3, seg35) evaluated labels: 1..35, background excluded.
OASIS_LABELS: tuple[int, ...] = tuple(range(1, 36))

_WARP_SLAB = 4  # x-planes per slab when warping
_CHUNK = 1 << 18  # voxels per histogram chunk


@cache
def _lumir_labels() -> tuple[int, ...]:
    config = resources.files("dirbench") / "resources/lumir/LUMIR_VAL_Segmentation_evaluation_config.json"
    for method in json.loads(config.read_text())["evaluation_methods"]:
        if method["metric"] == "dice":
            return tuple(int(i) for i in method["labels"])
    raise RuntimeError(f"{config}: no 'dice' entry with labels")


def lumir_labels() -> list[int]:
    """The 133 LUMIR label ids (background 0 included), read from the official evaluation config."""
    return list(_lumir_labels())


def parse_labels(spec: str | Iterable[int]) -> list[int]:
    """Label ids from ``"oasis"`` (1..35), ``"lumir"`` (133 ids) or a list like ``"1,2,5-9"``.

    Ranges are inclusive; order is kept; an iterable of ints is returned as a list. Raises ``ValueError``
    (a message without the spec, for the caller to prefix) for a malformed, empty or duplicated list.
    """
    if not isinstance(spec, str):
        labels = [int(i) for i in spec]
    elif spec.strip().lower() in ("oasis", "lumir"):
        labels = list(OASIS_LABELS) if spec.strip().lower() == "oasis" else lumir_labels()
    else:
        labels = []
        for part in spec.split(","):
            match = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?", part)
            if match is None:
                raise ValueError(f"expected oasis, lumir or a list like 1,2,5-9 (not {part!r})")
            lo = int(match.group(1))
            hi = lo if match.group(2) is None else int(match.group(2))
            if hi < lo:
                raise ValueError(f"empty range {part.strip()!r}")
            labels.extend(range(lo, hi + 1))
    if not labels:
        raise ValueError("no labels")
    if len(set(labels)) != len(labels):
        raise ValueError("duplicate label ids")
    return labels


def warp_labels(moving_seg: np.ndarray, disp: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Nearest-neighbour pull-back of a label map: ``out[x] = moving_seg[round(x + disp[x])]``, 0 outside.

    Args:
        moving_seg: ``[X', Y', Z']`` labels (any dtype; the field maps the fixed grid into it).
        disp: ``[X, Y, Z, 3]`` (or ``[3, X, Y, Z]``) voxel displacement on the fixed grid.
        threads: worker threads (default: usable cores, at most 4).

    Returns:
        ``[X, Y, Z]`` in ``moving_seg``'s dtype, identical to ``map_coordinates(moving_seg,
        identity + disp, order=0)``: a coordinate c outside ``[0, n - 1]`` on any axis gives 0,
        otherwise the sample is taken at ``floor(c + 0.5)`` (float64, ties round up).

    Float32 fields are handled in float32 without rounding error: with ``k = floor(u)`` and
    ``r = u - k`` (both exact), ``floor(i + u + 0.5) = i + k + (r >= 0.5)``, and the bounds are exact
    comparisons of u with integers. The float64 sum ``i + u`` only rounds for |u| < 2^-21, which can
    change the bound test only at index ``n - 1``; that plane is re-tested in float64.
    """
    moving_seg = np.asarray(moving_seg)
    if moving_seg.ndim != 3:
        raise ValueError(f"expected a 3-D label map, got shape {moving_seg.shape}")
    disp = as_field(disp)
    shape, msize = disp.shape[:3], moving_seg.shape
    flat = np.concatenate([moving_seg.reshape(-1), np.zeros(1, moving_seg.dtype)])  # last entry: outside
    out = np.empty(shape, moving_seg.dtype)
    exact32 = disp.dtype == np.float32 and moving_seg.size < 2**24  # linear indices exact in float32

    @np.errstate(over="ignore", invalid="ignore")  # outside voxels: garbage (per thread)
    def run(x0: int, x1: int) -> None:
        lin = np.zeros((x1 - x0, *shape[1:]), np.float32 if exact32 else np.float64)
        valid = np.ones(lin.shape, bool)
        for axis, n in enumerate(msize):
            u = np.ascontiguousarray(disp[x0:x1, :, :, axis])
            i = np.arange(shape[axis], dtype=lin.dtype).reshape([-1 if a == axis else 1 for a in range(3)])
            if axis == 0:
                i = i[x0:x1]
            if exact32:
                k = np.floor(u)
                idx = ((u - k) >= 0.5) + k
                idx += i
                ok = (u >= -i) & (u <= (n - 1) - i)
                plane = n - 1 - (x0 if axis == 0 else 0)
                if 0 <= plane < ok.shape[axis]:
                    sel = tuple(plane if a == axis else slice(None) for a in range(3))
                    c = (n - 1) + u[sel].astype(np.float64)
                    ok[sel] = (c >= 0) & (c <= n - 1)
            else:
                c = i + u.astype(np.float64, copy=False)
                ok = (c >= 0) & (c <= n - 1)
                idx = np.floor(c + 0.5)
            valid &= ok
            lin *= n
            lin += idx
        out[x0:x1] = flat[np.where(valid, lin, moving_seg.size).astype(np.intp)]

    parallel_map(run, slabs(0, shape[0], _WARP_SLAB), threads)
    return out


def check_segs(fixed_seg: np.ndarray, moving_seg: np.ndarray, warped_seg: np.ndarray) -> None:
    """Raise ``ValueError`` unless the three maps are 3-D integer arrays and fixed and warped share a shape."""
    if fixed_seg.shape != warped_seg.shape:
        raise ValueError(f"fixed {fixed_seg.shape} and warped {warped_seg.shape} segmentation shapes differ")
    for name, arr in (("fixed", fixed_seg), ("moving", moving_seg), ("warped", warped_seg)):
        if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} segmentation must be a 3-D integer array, got {arr.dtype} {arr.shape}")


def label_counts(
    fixed: np.ndarray, moving: np.ndarray, warped: np.ndarray, labels: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label ``[L]`` (int64): voxels in fixed, in moving, in warped, and in fixed ∩ warped.

    One chunked joint histogram of (fixed, warped) value pairs and one of moving, over the value
    range of the maps (values are first mapped to label indices when that range is wide).
    """
    arrays = [np.ascontiguousarray(a).reshape(-1) for a in (fixed, moving, warped)]
    lo = min(int(a.min()) for a in arrays)
    hi = max(int(a.max()) for a in arrays)
    if hi - lo >= 1024:  # wide value range: label j -> j, everything else -> L
        lut = np.full(hi - lo + 1, len(labels), np.intp)
        for j, lab in enumerate(labels):
            if lo <= lab <= hi:
                lut[lab - lo] = j
        arrays = [lut[a.astype(np.intp) - lo] for a in arrays]
        lo, hi, wanted = 0, len(labels), np.arange(len(labels))
    else:
        wanted = np.array([lab - lo if lo <= lab <= hi else -1 for lab in labels], dtype=np.intp)
    span = hi - lo + 1
    f, m, w = arrays
    joint = np.zeros(span * span, np.int64)
    n_moving = np.zeros(span, np.int64)
    for i in range(0, f.size, _CHUNK):
        fc, wc, mc = (a[i : i + _CHUNK].astype(np.intp) - lo for a in (f, w, m))
        fc *= span
        fc += wc
        joint += np.bincount(fc, minlength=span * span)
        n_moving += np.bincount(mc, minlength=span)
    joint = joint.reshape(span, span)
    present = wanted >= 0
    idx = np.where(present, wanted, 0)

    def pick(values: np.ndarray) -> np.ndarray:
        return np.where(present, values[idx], 0)

    return pick(joint.sum(1)), pick(n_moving), pick(joint.sum(0)), pick(np.diagonal(joint))


def pair_label_counts(pair: PairData) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The pair's warped moving segmentation and its :func:`label_counts`, computed once per pair."""

    def make() -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        assert pair.fixed_seg is not None and pair.moving_seg is not None
        warped = warp_labels(pair.moving_seg, pair.disp, pair.threads)
        check_segs(pair.fixed_seg, pair.moving_seg, warped)
        return warped, label_counts(pair.fixed_seg, pair.moving_seg, warped, pair.labels)

    return pair.shared("label_counts", make)
