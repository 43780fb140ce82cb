"""The metric registry: every metric :func:`~dirbench.metrics.evaluate_pair` can compute, in tidy-CSV order.

The evaluation (:mod:`dirbench.evaluation`), its CSV and JSON, the summary line of ``dirbench evaluate`` and
the LUMIR evaluation read the metric list from here; none of them names a metric except to map it to an
outside name (the LUMIR leaderboard's keys, a table's column). To add a metric: write its pure
``compute_*`` function and a ``PairData -> MetricValue`` adapter in its family module (or a new one), and
add one :class:`~dirbench.metrics.base.Metric` entry below (see the README, "Extending").
"""

from __future__ import annotations

from dirbench.metrics import ground_truth, jacobian, landmarks, overlap, surface
from dirbench.metrics.base import Metric

__all__ = ["DEFAULT_METRICS", "METRIC_NAMES", "REGISTRY", "get_metric"]

_SEGS = ("fixed_seg", "moving_seg")

REGISTRY: tuple[Metric, ...] = (
    Metric("dice", overlap.pair_dice, _SEGS, "", True, label_rows=True,
           description="Dice overlap per label; the case value is the mean over labels present in both images"),
    Metric("hd95", surface.pair_hd95, _SEGS, "mm", False, label_rows=True,
           description="95th-percentile robust Hausdorff distance per label (DeepMind surface-distance)"),
    Metric("sdlogj", jacobian.pair_sdlogj, (), "", False,
           description="standard deviation of log(|J| + 3) (Learn2Reg)"),
    Metric("sdlogj_raw", jacobian.pair_sdlogj_raw, (), "", False, default=False,
           description="standard deviation of log |J|, without the official +3"),
    Metric("ndv", jacobian.pair_ndv, (), "%", False,
           description="non-diffeomorphic volume of the 10 tetrahedral Jacobians (LUMIR)"),
    Metric("nondiff_voxels", jacobian.pair_nondiff_voxels, (), "%", False,
           description="voxels whose central-difference |J| <= 0"),
    Metric("tre", landmarks.pair_tre, ("fixed_landmarks", "moving_landmarks"), "mm", False,
           description="landmark target registration error (LUMIR)"),
    Metric("epe", ground_truth.pair_epe, ("fixed_seg", "true_disp"), "mm", False,
           description="mean end-point error to the true displacement inside the fixed brain (synthetic data)"),
    Metric("ic_error", ground_truth.pair_ic_error, ("fixed_seg", "inverse_disp"), "mm", False,
           description="mean |u(x) + v(x + u(x))| inside the fixed brain (models that return the inverse v)"),
)  # fmt: skip

#: Every registered metric name, in tidy-CSV order.
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in REGISTRY)

#: The metrics computed when no list is given (those the inputs allow).
DEFAULT_METRICS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.default)

_BY_NAME = {m.name: m for m in REGISTRY}


def get_metric(name: str) -> Metric:
    """The registry entry ``name``; ``ValueError`` naming the choices for an unknown name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}") from None
