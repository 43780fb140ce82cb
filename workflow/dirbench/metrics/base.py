"""What every metric family shares: one pair's inputs (:class:`PairData`), a result (:class:`MetricValue`) and a
registry entry (:class:`Metric`).

A metric is a pure function ``PairData -> MetricValue``. :class:`PairData` also caches the work several metrics
share (one label warp, one label histogram, one Jacobian pass), so that :func:`dirbench.metrics.evaluate_pair`
computes each of those once however many metrics use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

__all__ = ["Metric", "MetricValue", "PairData"]

T = TypeVar("T")


@dataclass
class PairData:
    """The inputs of one registration pair (arrays already loaded and shape-checked) and the shared work.

    Attributes:
        disp: ``[X, Y, Z, 3]`` float32 / float64 voxel displacement on the fixed grid (pull-back).
        wanted: names of the metrics being computed (a family may compute several in one pass).
        fixed_seg, moving_seg: ``[X, Y, Z]`` integer label maps (Dice, HD95; ``fixed_seg > 0`` is the
            brain mask of EPE and the IC error).
        labels: evaluated label ids.
        fixed_image, moving_image: ``[X, Y, Z]`` intensities (the NDV mask).
        ndv_mask_kind: ``"moving"``, ``"fixed"`` or ``"none"`` (see :func:`dirbench.metrics.ndv_mask`).
        fixed_landmarks, moving_landmarks: landmark label volumes (TRE).
        spacing: voxel size in mm.
        true_disp: ``[X, Y, Z, 3]`` ground-truth displacement of the pair (EPE), voxel units.
        inverse_disp: ``[X', Y', Z', 3]`` the model's inverse field on the moving grid (IC error), voxel units.
        threads: worker threads (None: usable cores, at most 4).
    """

    disp: np.ndarray
    wanted: frozenset[str] = frozenset()
    fixed_seg: np.ndarray | None = None
    moving_seg: np.ndarray | None = None
    labels: list[int] = field(default_factory=list)
    fixed_image: np.ndarray | None = None
    moving_image: np.ndarray | None = None
    ndv_mask_kind: str = "moving"
    fixed_landmarks: np.ndarray | None = None
    moving_landmarks: np.ndarray | None = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    true_disp: np.ndarray | None = None
    inverse_disp: np.ndarray | None = None
    threads: int | None = None
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    def has(self, *names: str) -> bool:
        """Whether every input ``names`` (attribute names) was given."""
        return all(getattr(self, name) is not None for name in names)

    def shared(self, key: str, make: Callable[[], T]) -> T:
        """``make()``, computed once per pair and ``key`` (work several metrics share)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]


@dataclass(frozen=True)
class MetricValue:
    """One metric of one pair: the case value, and per-item values where the metric has items.

    Attributes:
        value: the case value (NaN where undefined, inf where the official rule says so).
        item_kind: ``"label"`` or ``"landmark"`` when the case value summarises items, else None.
        ids: the item ids (label ids, landmark ids), in order.
        items: float64 ``[len(ids)]`` per-item values.
    """

    value: float
    item_kind: str | None = None
    ids: tuple[int, ...] = ()
    items: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class Metric:
    """A registry entry (:data:`dirbench.metrics.REGISTRY`).

    Attributes:
        name: the metric's name in the tidy CSV and the JSON (``dice``, ``hd95``, ...).
        compute: the pure function ``PairData -> MetricValue``.
        needs: :class:`PairData` attributes that must be given; without them the metric is skipped.
        unit: ``""``, ``"mm"`` or ``"%"`` (summaries).
        higher_is_better: the direction of improvement.
        label_rows: write one CSV row per label besides the case row.
        default: computed when no metric list is given (``False``: only on request).
        description: one line for help texts and the README.
    """

    name: str
    compute: Callable[[PairData], MetricValue]
    needs: tuple[str, ...] = ()
    unit: str = ""
    higher_is_better: bool = False
    label_rows: bool = False
    default: bool = True
    description: str = ""

    def applies(self, pair: PairData) -> bool:
        """Whether ``pair`` has the inputs this metric needs."""
        return pair.has(*self.needs)

