"""Registration metrics exactly as the Learn2Reg (OASIS) and LUMIR evaluators define them, only faster.

Definitions (``spec/evaluation-and-data.md`` §0–§5). Sources: the Learn2Reg evaluator (MDL-UzL/L2R
``evaluation/``), the LUMIR evaluator (JHU-MedImage-Reg/LUMIR_L2R ``L2R_LUMIR_Eval``), DeepMind's
``surface-distance`` (Nikolov et al., 2021), and the digital-diffeomorphism measures of Liu, Chen,
Wei, Carass & Prince, "On finite difference Jacobian computation in deformable image registration",
IJCV 2024. Reproduced study: Liu, Ruan & Sheng, "Unsupervised Deformable Image Registration
Revisited", MIDL 2025.

**Displacement** ``disp``: ``[X, Y, Z, 3]`` float32 (``[3, X, Y, Z]`` is accepted), voxel units on the fixed
grid, component c along array axis c; ``warped(x) = moving(x + disp(x))``.

One module per metric family (the layout of MONAI's ``monai/metrics``), each a set of pure ``compute_*``
functions on numpy arrays that raise only ``ValueError``:

- :mod:`~dirbench.metrics.labels`: label sets (:data:`OASIS_LABELS`, :func:`lumir_labels`,
  :func:`parse_labels`) and :func:`warp_labels`, the evaluators' nearest-neighbour label warp;
- :mod:`~dirbench.metrics.overlap`: :func:`compute_dice`;
- :mod:`~dirbench.metrics.surface`: :func:`compute_hd95` and the shared surface-element code
  (:func:`surfel_area_table`);
- :mod:`~dirbench.metrics.jacobian`: :func:`compute_sdlogj`, :func:`compute_sdlogj_raw`, :func:`compute_ndv`,
  :func:`compute_nondiff_voxels`, :func:`jacobian_determinant`, :func:`ndv_mask` and the shared slab engine;
- :mod:`~dirbench.metrics.landmarks`: :func:`compute_tre`, :func:`landmark_errors`;
- :mod:`~dirbench.metrics.ground_truth`: :func:`compute_epe`, :func:`compute_ic_error` (synthetic data,
  inverse-consistent models).

:mod:`~dirbench.metrics.registry` lists every metric (:data:`REGISTRY`, in tidy-CSV order) with the inputs
it needs; :func:`evaluate_pair` computes those a pair's inputs allow, sharing the work between them, and
returns a :class:`PairMetrics`.

Values: Dice, HD95, TRE and (for float32 fields) SDlogJ and |J| are bit-identical to the official
code; NDV agrees to float64 rounding (~1e-15 relative).
"""

from dirbench.metrics.base import Metric, MetricValue, PairData
from dirbench.metrics.ground_truth import compute_epe, compute_ic_error
from dirbench.metrics.jacobian import (
    compute_ndv,
    compute_nondiff_voxels,
    compute_sdlogj,
    compute_sdlogj_raw,
    jacobian_determinant,
    ndv_mask,
)
from dirbench.metrics.labels import OASIS_LABELS, lumir_labels, parse_labels, warp_labels
from dirbench.metrics.landmarks import compute_tre, landmark_errors
from dirbench.metrics.overlap import compute_dice
from dirbench.metrics.pair import PairMetrics, evaluate_pair
from dirbench.metrics.registry import DEFAULT_METRICS, METRIC_NAMES, REGISTRY, get_metric
from dirbench.metrics.surface import compute_hd95, surfel_area_table

__all__ = [
    "DEFAULT_METRICS",
    "METRIC_NAMES",
    "OASIS_LABELS",
    "REGISTRY",
    "Metric",
    "MetricValue",
    "PairData",
    "PairMetrics",
    "compute_dice",
    "compute_epe",
    "compute_hd95",
    "compute_ic_error",
    "compute_ndv",
    "compute_nondiff_voxels",
    "compute_sdlogj",
    "compute_sdlogj_raw",
    "compute_tre",
    "evaluate_pair",
    "get_metric",
    "jacobian_determinant",
    "landmark_errors",
    "lumir_labels",
    "ndv_mask",
    "parse_labels",
    "surfel_area_table",
    "warp_labels",
]
