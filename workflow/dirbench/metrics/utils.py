"""Array helpers shared by the metric families: field layout, slabs, worker threads, NaN-aware means."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["as_field", "nanmean", "parallel_map", "slabs", "worker_threads"]


def as_field(disp: np.ndarray) -> np.ndarray:
    """``[X, Y, Z, 3]`` view of a displacement (``[3, X, Y, Z]`` is transposed), float32 or float64.

    Raises ``ValueError`` for any other shape.
    """
    disp = np.asarray(disp)
    if disp.ndim == 4 and disp.shape[-1] != 3 and disp.shape[0] == 3:
        disp = np.moveaxis(disp, 0, -1)
    if disp.ndim != 4 or disp.shape[-1] != 3:
        raise ValueError(f"expected a displacement [X, Y, Z, 3] or [3, X, Y, Z], got shape {disp.shape}")
    if disp.dtype not in (np.float32, np.float64):
        disp = disp.astype(np.float32 if disp.dtype.itemsize <= 4 else np.float64)
    return disp


def slabs(lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    """``[(a, b), ...]`` covering ``[lo, hi)`` in steps of ``step``."""
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


def worker_threads(threads: int | None) -> int:
    """Worker threads: ``threads``, or the usable cores (at most 4)."""
    if threads is not None:
        return max(1, int(threads))
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(4, os.cpu_count() or 1))


def parallel_map(fn: Callable[..., Any], items: Sequence[tuple], threads: int | None) -> list:
    """``[fn(*item) for item in items]``, spread over threads (numpy releases the GIL in its loops)."""
    n = worker_threads(threads)
    if n == 1 or len(items) < 2:
        return [fn(*item) for item in items]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda item: fn(*item), items))


def nanmean(values: np.ndarray) -> float:
    """``np.nanmean`` without the all-NaN warning (NaN then); inf propagates."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan
