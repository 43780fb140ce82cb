"""All the metrics of one registration pair, sharing the work: :func:`evaluate_pair` → :class:`PairMetrics`."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from dirbench.metrics.base import MetricValue, PairData
from dirbench.metrics.labels import OASIS_LABELS, parse_labels
from dirbench.metrics.registry import DEFAULT_METRICS, REGISTRY, get_metric
from dirbench.metrics.utils import as_field

__all__ = ["PairMetrics", "evaluate_pair"]


@dataclass
class PairMetrics:
    """The metrics of one pair, in registry order: ``result["dice"].value``, ``result["dice"].items``.

    ``ndv_mask`` names the NDV / non-diff-voxel mask (``moving``, ``fixed`` or ``none``).
    """

    results: dict[str, MetricValue] = field(default_factory=dict)
    ndv_mask: str = "none"

    @property
    def computed(self) -> tuple[str, ...]:
        """The names of the computed metrics, in registry order."""
        return tuple(self.results)

    def __getitem__(self, name: str) -> MetricValue:
        return self.results[name]

    def __contains__(self, name: object) -> bool:
        return name in self.results

    def __iter__(self) -> Iterator[tuple[str, MetricValue]]:
        return iter(self.results.items())

    def case_metrics(self) -> dict[str, float]:
        """``{metric: case value}`` for the computed metrics, in registry order."""
        return {name: value.value for name, value in self.results.items()}


def _check_grid(name: str, array: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if array is not None and np.shape(array)[:3] != shape:
        raise ValueError(f"{name} {np.shape(array)[:3]} does not match the field {shape}")


def evaluate_pair(
    disp: np.ndarray,
    *,
    fixed_seg: np.ndarray | None = None,
    moving_seg: np.ndarray | None = None,
    labels: Sequence[int] | str = OASIS_LABELS,
    fixed_image: np.ndarray | None = None,
    moving_image: np.ndarray | None = None,
    ndv_mask_kind: str = "moving",
    fixed_landmarks: np.ndarray | None = None,
    moving_landmarks: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    true_disp: np.ndarray | None = None,
    inverse_disp: np.ndarray | None = None,
    metrics: Collection[str] | None = None,
    threads: int | None = None,
) -> PairMetrics:
    """Every metric of one pair that its inputs allow, sharing the work (one warp, one label pass, one
    Jacobian pass).

    Args:
        disp: ``[X, Y, Z, 3]`` (or ``[3, X, Y, Z]``) float32 voxel displacement on the fixed grid.
        fixed_seg, moving_seg: ``[X, Y, Z]`` integer label maps (both or neither): Dice, HD95; the fixed
            brain ``fixed_seg > 0`` is the mask of EPE and the IC error.
        labels: label ids or a :func:`~dirbench.metrics.parse_labels` spec (``"oasis"``, ``"lumir"``, ``"1,2,5-9"``).
        fixed_image, moving_image: ``[X, Y, Z]`` intensities for the NDV mask.
        ndv_mask_kind: ``"moving"`` (LUMIR 2024, default), ``"fixed"`` (LUMIR 2025) or ``"none"``.
        fixed_landmarks, moving_landmarks: LUMIR landmark label volumes (both or neither): TRE.
        spacing: voxel size in mm (HD95, TRE, EPE, IC error); OASIS and LUMIR are 1 mm isotropic.
        true_disp: the pair's ground-truth displacement, fixed grid (EPE).
        inverse_disp: the model's inverse field on the moving grid (IC error).
        metrics: names from :data:`~dirbench.metrics.METRIC_NAMES` to compute (default:
            :data:`~dirbench.metrics.DEFAULT_METRICS`); those whose inputs are missing are skipped, e.g.
            ``{"dice"}`` for a quick validation score.
        threads: worker threads (default: usable cores, at most 4).

    Raises:
        ValueError: an unknown metric, mismatched inputs, or an NDV mask whose image is missing.
    """
    disp = as_field(disp)
    shape = disp.shape[:3]
    names = [get_metric(name).name for name in (DEFAULT_METRICS if metrics is None else metrics)]
    if (fixed_seg is None) != (moving_seg is None):
        raise ValueError("give both fixed_seg and moving_seg, or neither")
    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise ValueError("give both fixed_landmarks and moving_landmarks, or neither")
    for name, array in (("fixed segmentation", fixed_seg), ("true displacement", true_disp),
                        ("fixed landmarks", fixed_landmarks)):  # fmt: skip
        _check_grid(name, array, shape)
    pair = PairData(
        disp=disp,
        fixed_seg=None if fixed_seg is None else np.asarray(fixed_seg),
        moving_seg=None if moving_seg is None else np.asarray(moving_seg),
        labels=parse_labels(labels) if fixed_seg is not None else [],
        fixed_image=fixed_image,
        moving_image=moving_image,
        ndv_mask_kind=ndv_mask_kind,
        fixed_landmarks=fixed_landmarks,
        moving_landmarks=moving_landmarks,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        true_disp=true_disp,
        inverse_disp=inverse_disp,
        threads=threads,
    )
    chosen = [m for m in REGISTRY if m.name in names and m.applies(pair)]
    pair.wanted = frozenset(m.name for m in chosen)
    return PairMetrics({m.name: m.compute(pair) for m in chosen}, ndv_mask_kind)
