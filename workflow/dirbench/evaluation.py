"""Evaluate registrations from files: one pair to a dict / JSON, or a dataset pair list to a tidy CSV.

The metrics themselves are :mod:`dirbench.metrics` (Learn2Reg / LUMIR definitions; the list of metrics is its
registry, :data:`dirbench.metrics.REGISTRY`). This module loads the NIfTI inputs (:mod:`dirbench.io`, which
names the file in every error), wires them into :func:`dirbench.metrics.evaluate_pair`, and writes the results:

- **Tidy CSV** (one file per method × pair list), columns :data:`CSV_COLUMNS`
  ``method,dataset,fixed,moving,metric,label,value``: one row per computed case metric, in registry order
  (``dice``, ``hd95``, ``sdlogj``, ``ndv``, ``nondiff_voxels``; ``tre`` where both images have landmarks;
  ``epe`` where the dataset has ground truth; ``ic_error`` where the registration wrote its inverse field)
  with an empty ``label``, plus one row per label for the metrics with per-label rows (``dice`` and
  ``hd95``; ``label`` = the id). Values are Python float reprs: ``nan`` (undefined, e.g. a label absent
  from the fixed or moving segmentation) and ``inf`` (HD95 of a label that vanished after warping) are
  read back as floats by pandas and ``float()``.
- **JSON** (one pair): :func:`to_json_value` writes NaN as ``null`` and ±infinity as the strings
  ``"inf"`` / ``"-inf"``, so the file stays valid JSON.

Ground truth: for a dataset whose ``dataset.json`` declares ``"ground_truth"`` (:attr:`Dataset.ground_truth`)
the true pair displacement is computed for every pair and ``epe`` is reported, also for the all-zero field
(Initial) and Greedy. Inverse fields: ``inv_{fixed}_{moving}.nii.gz`` beside ``disp_{fixed}_{moving}.nii.gz``
(written by :func:`dirbench.inference.register_pairs` for models that return one) adds ``ic_error``.

Pairs are streamed one at a time (at 160×224×192 well under 1 GiB per pair) and the CSV is written
atomically: it appears only once every pair has been evaluated.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dirbench import io, metrics
from dirbench.dataset import Dataset, PairRecord
from dirbench.errors import UserError
from dirbench.metrics.utils import nanmean

__all__ = [
    "CSV_COLUMNS",
    "EvaluationSummary",
    "evaluate_dataset",
    "evaluate_files",
    "format_value",
    "format_values",
    "pair_rows",
    "result_to_json",
    "to_json_value",
    "write_json",
]

#: The tidy evaluation CSV header (also read by :mod:`dirbench.tables`).
CSV_COLUMNS: tuple[str, ...] = ("method", "dataset", "fixed", "moving", "metric", "label", "value")

# JSON keys of the per-item lists, by item kind: (ids key, values key)
_ITEM_KEYS = {"label": ("labels", "per_label"), "landmark": ("landmark_ids", "per_landmark")}


def format_value(value: float) -> str:
    """A CSV cell for a metric value: the shortest round-tripping float repr (``nan``, ``inf``)."""
    return repr(float(value))


def to_json_value(value: float) -> float | str | None:
    """JSON-safe float: NaN → ``None`` (null), ±inf → ``"inf"`` / ``"-inf"``, finite unchanged."""
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def format_values(values: dict[str, float]) -> str:
    """``dice 0.7712, hd95 2.5 mm, ndv 0.01%`` (4 significant digits, the registry's units)."""
    shown = []
    for name, value in values.items():
        unit = metrics.get_metric(name).unit
        shown.append(f"{name} {value:.4g}" + (f" {unit}" if unit == "mm" else unit))
    return ", ".join(shown) or "no metric"


def evaluate_files(
    disp: str | Path | None,
    *,
    fixed_seg: str | Path | None = None,
    moving_seg: str | Path | None = None,
    fixed_image: str | Path | None = None,
    moving_image: str | Path | None = None,
    fixed_landmarks: str | Path | None = None,
    moving_landmarks: str | Path | None = None,
    inverse: str | Path | None = None,
    true_disp: str | Path | np.ndarray | None = None,
    labels: Sequence[int] | str = metrics.OASIS_LABELS,
    ndv_mask: str = "moving",
    spacing: Sequence[float] | None = None,
    shape: tuple[int, int, int] | None = None,
    metric_names: Collection[str] | None = None,
    threads: int | None = None,
) -> metrics.PairMetrics:
    """Load one pair's files and compute every metric they allow.

    Args:
        disp: ``disp_{fixed}_{moving}.nii.gz`` (``[X, Y, Z, 3]`` or ``[3, X, Y, Z]``, voxel units),
            or None for the all-zero field (the "Initial" row); its shape then comes from ``shape``
            or the first fixed-side file given.
        fixed_seg, moving_seg: label maps (both or neither) for Dice and HD95; ``fixed_seg > 0`` is the mask
            of EPE and the IC error.
        fixed_image, moving_image: intensity images, read only for the NDV mask.
        fixed_landmarks, moving_landmarks: LUMIR landmark label volumes (both or neither) for TRE.
        inverse: the model's inverse field on the moving grid (``inv_{fixed}_{moving}.nii.gz``), for the IC error.
        true_disp: the true pair displacement (a file or an array ``[X, Y, Z, 3]``), for EPE.
        labels, ndv_mask, threads: as in :func:`dirbench.metrics.evaluate_pair`.
        spacing: voxel size in mm (HD95, TRE, EPE, IC error); None: the header of the first fixed-side
            file given (fixed segmentation, image or landmarks), else the displacement's.
        shape: expected ``(X, Y, Z)`` of every volume (None: the field's).
        metric_names: metrics to compute (default: :data:`dirbench.metrics.DEFAULT_METRICS`).

    Raises:
        UserError: a missing, unreadable or mis-shaped file (named).
        ValueError: inputs that do not go together (see :func:`dirbench.metrics.evaluate_pair`).
    """
    fixed_side = [p for p in (fixed_seg, fixed_image, fixed_landmarks) if p is not None]
    if disp is not None:
        field = io.load_disp(disp, shape)
    else:
        if shape is None and not fixed_side:
            raise ValueError("a zero field needs a fixed segmentation, image or landmark file for its shape")
        zero_shape = shape if shape is not None else io.load_image(fixed_side[0]).shape
        field = np.zeros((*zero_shape, 3), np.float32)
    if spacing is None:
        header = next(iter(fixed_side), disp)
        spacing = io.load_spacing(header) if header is not None else (1.0, 1.0, 1.0)
    grid = field.shape[:3]
    image = {"fixed": fixed_image, "moving": moving_image}.get(ndv_mask)
    mask_image = None if image is None else io.load_image(image, grid)
    if true_disp is not None and not isinstance(true_disp, np.ndarray):
        true_disp = io.load_disp(true_disp, grid)

    def labels_of(path: str | Path | None) -> np.ndarray | None:
        return None if path is None else io.load_labels(path, grid)

    return metrics.evaluate_pair(
        field,
        fixed_seg=labels_of(fixed_seg),
        moving_seg=labels_of(moving_seg),
        labels=labels,
        fixed_image=mask_image if ndv_mask == "fixed" else None,
        moving_image=mask_image if ndv_mask == "moving" else None,
        ndv_mask_kind=ndv_mask,
        fixed_landmarks=labels_of(fixed_landmarks),
        moving_landmarks=labels_of(moving_landmarks),
        spacing=spacing,
        true_disp=true_disp,
        inverse_disp=None if inverse is None else io.load_disp(inverse),
        metrics=metric_names,
        threads=threads,
    )


def result_to_json(result: metrics.PairMetrics, **meta: Any) -> dict[str, Any]:
    """A JSON-ready dict of one pair's metrics (NaN → null, inf → "inf"; see :func:`to_json_value`).

    ``metrics`` holds the case values; per-item metrics add ``labels`` + ``per_label`` (Dice, HD95) or
    ``landmark_ids`` + ``per_landmark`` (TRE), each ``{metric: [value per item]}``.
    """
    out: dict[str, Any] = {**meta, "ndv_mask": result.ndv_mask}
    out["metrics"] = {name: to_json_value(value) for name, value in result.case_metrics().items()}
    for name, value in result:
        if value.item_kind is not None:
            ids_key, values_key = _ITEM_KEYS[value.item_kind]
            out[ids_key] = list(value.ids)
            out.setdefault(values_key, {})[name] = [to_json_value(v) for v in value.items]
    out["encoding"] = 'NaN is written as null, +/-infinity as the strings "inf" / "-inf"'
    return out


def pair_rows(
    method: str, dataset: str, pair: PairRecord, result: metrics.PairMetrics
) -> Iterator[list[str]]:
    """The tidy CSV rows of one pair: case metrics (empty label) and, where the registry says so, per label."""
    head = [method, dataset, pair.fixed.id, pair.moving.id]
    for name, value in result:
        yield [*head, name, "", format_value(value.value)]
        if metrics.get_metric(name).label_rows:
            for label, v in zip(value.ids, value.items, strict=True):
                yield [*head, name, str(label), format_value(v)]


@dataclass
class EvaluationSummary:
    """What :func:`evaluate_dataset` did: pairs evaluated and the mean of each case metric over them.

    Means skip NaN (a pair where the metric is undefined), as the tables do; an inf stays inf.
    """

    method: str
    dataset: str
    pair_list: str
    pairs: int
    means: dict[str, float]
    csv_path: Path

    def line(self) -> str:
        """One line for the log, e.g. ``evaluate dp on demo:test: 6 pairs; mean dice 0.7712, hd95 2.5 mm, ...``."""
        noun = "pair" if self.pairs == 1 else "pairs"
        return (f"evaluate {self.method} on {self.dataset}:{self.pair_list}: {self.pairs} {noun}; "
                f"mean {format_values(self.means)} -> {self.csv_path}")


def _has(pair: PairRecord, attr: str) -> bool:
    return getattr(pair.fixed, attr) is not None and getattr(pair.moving, attr) is not None


def evaluate_dataset(
    dataset: Dataset,
    pair_list: str,
    csv_path: str | Path,
    *,
    method: str,
    disp_dir: str | Path | None = None,
    zero: bool = False,
    labels: Sequence[int] | None = None,
    ndv_mask: str = "moving",
    threads: int | None = None,
    progress: bool = True,
) -> EvaluationSummary:
    """Evaluate every pair of ``dataset``'s list ``pair_list`` and write the tidy CSV atomically.

    Args:
        dataset: the parsed ``dataset.json``.
        pair_list: name of the pair list (``validation``, ``test``, ...).
        csv_path: output CSV (:data:`CSV_COLUMNS`).
        method: the ``method`` column (e.g. ``dp``, ``greedy``, ``initial``).
        disp_dir: folder of ``disp_{fixed}_{moving}.nii.gz`` files (``PairRecord.disp_name``), and of the
            optional inverse fields ``inv_{fixed}_{moving}.nii.gz`` (``PairRecord.inverse_name``).
        zero: evaluate the all-zero field instead of files (the "Initial" row; no ``disp_dir``).
        labels: label ids (default: the dataset's ``labels``).
        ndv_mask: ``moving`` (LUMIR 2024), ``fixed`` (LUMIR 2025) or ``none``.
        threads: worker threads per pair.
        progress: show a progress bar on stderr (only when stderr is a terminal).

    Returns:
        The :class:`EvaluationSummary`. Every displacement file is checked before the first pair
        (a missing one raises :class:`UserError` naming it).
    """
    pairs = dataset.pairs(pair_list)
    if not pairs:
        raise UserError(f"{dataset.path}: pair list {pair_list!r} is empty")
    if zero == (disp_dir is not None):
        raise UserError("give exactly one of --disp-dir and --zero")
    if disp_dir is not None:
        missing = [path for p in pairs if not (path := Path(disp_dir) / p.disp_name).is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UserError(f"{missing[0]}: displacement file not found{more}")
    if labels is None and any(_has(p, "label") for p in pairs):
        if not dataset.labels:
            msg = "no 'labels' in dataset.json; pass --labels (oasis, lumir or 1,2,5-9)"
            raise UserError(f"{dataset.path}: {msg}")
        labels = dataset.labels
    try:
        shape = dataset.shape
    except UserError:
        shape = None
    has_truth = dataset.ground_truth is not None  # checked before the first pair
    iterator: Sequence[PairRecord] | Iterator[PairRecord] = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc=f"evaluate {method}", unit="pair", disable=None)
    values: dict[str, list[float]] = {}
    with io.atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for pair in iterator:
            segs = _has(pair, "label")
            lms = _has(pair, "landmarks")
            inverse = None if disp_dir is None else Path(disp_dir) / pair.inverse_name
            result = evaluate_files(
                None if disp_dir is None else Path(disp_dir) / pair.disp_name,
                fixed_seg=pair.fixed.label if segs else None,
                moving_seg=pair.moving.label if segs else None,
                fixed_image=pair.fixed.image,
                moving_image=pair.moving.image,
                fixed_landmarks=pair.fixed.landmarks if lms else None,
                moving_landmarks=pair.moving.landmarks if lms else None,
                inverse=inverse if inverse is not None and inverse.is_file() else None,
                true_disp=_true_disp(dataset, pair) if has_truth else None,
                labels=labels if labels is not None else [],
                ndv_mask=ndv_mask,
                spacing=dataset.spacing,
                shape=shape,
                threads=threads,
            )
            writer.writerows(pair_rows(method, dataset.name, pair, result))
            handle.flush()
            for name, value in result.case_metrics().items():
                values.setdefault(name, []).append(value)
    means = {name: nanmean(np.asarray(v)) for name, v in values.items()}
    return EvaluationSummary(method, dataset.name, pair_list, len(pairs), means, Path(csv_path))


def _true_disp(dataset: Dataset, pair: PairRecord) -> np.ndarray:
    """The pair's ground-truth displacement (a dataset with ``ground_truth``: :attr:`Dataset.ground_truth`)."""
    from dirbench.data.demo import true_pair_disp  # the one kind, "template_warps"

    return true_pair_disp(dataset, pair.fixed.id, pair.moving.id)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically (no NaN / inf tokens: see :func:`to_json_value`)."""
    with io.atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
