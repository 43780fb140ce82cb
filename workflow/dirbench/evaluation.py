"""Evaluate registrations from files: one pair to a dict / JSON, or a dataset pair list to a tidy CSV.

The metrics themselves are :mod:`dirbench.metrics` (Learn2Reg / LUMIR definitions). This module
loads the NIfTI inputs (:mod:`dirbench.io`, which names the file in every error), wires them into
:func:`dirbench.metrics.evaluate_pair`, and writes the results:

- **Tidy CSV** (one file per method × pair list), columns :data:`CSV_COLUMNS`
  ``method,dataset,fixed,moving,metric,label,value``: one row per case metric (``dice``, ``hd95``,
  ``sdlogj``, ``ndv``, ``nondiff_voxels``, and ``tre`` where both images have landmarks) with an
  empty ``label``, plus one row per label for ``dice`` and ``hd95`` (``label`` = the id). Values
  are Python float reprs: ``nan`` (undefined, e.g. a label absent from the fixed or moving
  segmentation) and ``inf`` (HD95 of a label that vanished after warping) are read back as floats
  by pandas and ``float()``.
- **JSON** (one pair): :func:`to_json_value` writes NaN as ``null`` and ±infinity as the strings
  ``"inf"`` / ``"-inf"``, so the file stays valid JSON.

Pairs are streamed one at a time (at 160×224×192 well under 1 GiB per pair) and the CSV is written
atomically: it appears only once every pair has been evaluated.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dirbench import io, metrics
from dirbench.dataset import Dataset, PairRecord
from dirbench.errors import UserError

__all__ = [
    "CSV_COLUMNS",
    "evaluate_dataset",
    "evaluate_files",
    "format_value",
    "pair_rows",
    "result_to_json",
    "to_json_value",
    "write_json",
]

CSV_COLUMNS: tuple[str, ...] = ("method", "dataset", "fixed", "moving", "metric", "label", "value")


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


def evaluate_files(
    disp: str | Path | None,
    *,
    fixed_seg: str | Path | None = None,
    moving_seg: str | Path | None = None,
    fixed_image: str | Path | None = None,
    moving_image: str | Path | None = None,
    fixed_landmarks: str | Path | None = None,
    moving_landmarks: str | Path | None = None,
    labels: Sequence[int] | str = metrics.OASIS_LABELS,
    ndv_mask: str = "moving",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    shape: tuple[int, int, int] | None = None,
    with_sdlogj_raw: bool = False,
    threads: int | None = None,
) -> metrics.PairMetrics:
    """Load one pair's files and compute every metric they allow.

    Args:
        disp: ``disp_{fixed}_{moving}.nii.gz`` (``[X, Y, Z, 3]`` or ``[3, X, Y, Z]``, voxel units),
            or None for the all-zero field (the "Initial" row); its shape then comes from ``shape``
            or the first fixed-side file given.
        fixed_seg, moving_seg: label maps (both or neither) for Dice and HD95.
        fixed_image, moving_image: intensity images, read only for the NDV mask.
        fixed_landmarks, moving_landmarks: LUMIR landmark label volumes (both or neither) for TRE.
        labels, ndv_mask, spacing, with_sdlogj_raw, threads: as in :func:`dirbench.metrics.evaluate_pair`.
        shape: expected ``(X, Y, Z)`` of every volume (None: the field's).
    """
    if (fixed_seg is None) != (moving_seg is None):
        raise UserError("give both --fixed-seg and --moving-seg, or neither")
    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise UserError("give both --fixed-landmarks and --moving-landmarks, or neither")
    if ndv_mask in ("moving", "fixed") and (moving_image if ndv_mask == "moving" else fixed_image) is None:
        raise UserError(f"--ndv-mask {ndv_mask} needs the {ndv_mask} image (or use --ndv-mask none)")
    if disp is not None:
        field = io.load_disp(disp, shape)
    else:
        reference = next((p for p in (fixed_seg, fixed_image, fixed_landmarks) if p is not None), None)
        if shape is None and reference is None:
            raise UserError("a zero field needs a fixed segmentation, image or landmark file for its shape")
        zero_shape = shape if shape is not None else io.load_image(reference).shape  # type: ignore[arg-type]
        field = np.zeros((*zero_shape, 3), np.float32)
    grid = field.shape[:3]
    fixed_seg_a = None if fixed_seg is None else io.load_labels(fixed_seg, grid)
    moving_seg_a = None if moving_seg is None else io.load_labels(moving_seg, grid)
    image = {"fixed": fixed_image, "moving": moving_image}.get(ndv_mask)
    mask_image = None if image is None else io.load_image(image, grid)
    fixed_lms = None if fixed_landmarks is None else io.load_labels(fixed_landmarks, grid)
    moving_lms = None if moving_landmarks is None else io.load_labels(moving_landmarks, grid)
    return metrics.evaluate_pair(
        field,
        fixed_seg=fixed_seg_a,
        moving_seg=moving_seg_a,
        labels=labels,
        fixed_image=mask_image if ndv_mask == "fixed" else None,
        moving_image=mask_image if ndv_mask == "moving" else None,
        ndv_mask_kind=ndv_mask,
        fixed_landmarks=fixed_lms,
        moving_landmarks=moving_lms,
        spacing=spacing,
        with_sdlogj_raw=with_sdlogj_raw,
        threads=threads,
    )


def result_to_json(result: metrics.PairMetrics, **meta: Any) -> dict[str, Any]:
    """A JSON-ready dict of one pair's metrics (NaN → null, inf → "inf"; see :func:`to_json_value`)."""
    case = {name: to_json_value(value) for name, value in result.case_metrics().items()}
    if not math.isnan(result.sdlogj_raw):
        case["sdlogj_raw"] = to_json_value(result.sdlogj_raw)
    out: dict[str, Any] = {**meta, "ndv_mask": result.ndv_mask, "metrics": case}
    if result.labels:
        out["labels"] = list(result.labels)
        out["per_label"] = {
            name: [to_json_value(v) for v in getattr(result, f"{name}_per_label")]
            for name in ("dice", "hd95")
            if name in result.computed
        }
    if result.landmark_ids:
        out["landmark_ids"] = list(result.landmark_ids)
        out["tre_per_landmark"] = [to_json_value(v) for v in result.tre_per_landmark]
    out["encoding"] = 'NaN is written as null, +/-infinity as the strings "inf" / "-inf"'
    return out


def pair_rows(
    method: str, dataset: str, pair: PairRecord, result: metrics.PairMetrics
) -> Iterator[list[str]]:
    """The tidy CSV rows of one pair: case metrics (empty label) and per-label dice / hd95."""
    head = [method, dataset, pair.fixed.id, pair.moving.id]
    for name, value in result.case_metrics().items():
        yield [*head, name, "", format_value(value)]
        if name in ("dice", "hd95"):
            for label, v in zip(result.labels, getattr(result, f"{name}_per_label"), strict=True):
                yield [*head, name, str(label), format_value(v)]


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
    labels: Sequence[int] | str | None = None,
    ndv_mask: str = "moving",
    threads: int | None = None,
    progress: bool = True,
) -> int:
    """Evaluate every pair of ``dataset``'s list ``pair_list`` and write the tidy CSV atomically.

    Args:
        dataset: the parsed ``dataset.json``.
        pair_list: name of the pair list (``validation``, ``test``, ...).
        csv_path: output CSV (:data:`CSV_COLUMNS`).
        method: the ``method`` column (e.g. ``dp``, ``greedy``, ``initial``).
        disp_dir: folder of ``disp_{fixed}_{moving}.nii.gz`` files (``PairRecord.disp_name``).
        zero: evaluate the all-zero field instead of files (the "Initial" row; no ``disp_dir``).
        labels: label ids or spec (default: the dataset's ``labels``).
        ndv_mask: ``moving`` (LUMIR 2024), ``fixed`` (LUMIR 2025) or ``none``.
        threads: worker threads per pair.
        progress: show a progress bar on stderr.

    Returns:
        The number of pairs evaluated. Every displacement file is checked before the first pair
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
    label_ids = metrics.parse_labels(labels) if labels is not None else []
    try:
        shape = dataset.shape
    except UserError:
        shape = None
    iterator: Sequence[PairRecord] | Iterator[PairRecord] = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc=f"evaluate {method}", unit="pair", disable=None)
    with io.atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for pair in iterator:
            segs = _has(pair, "label")
            lms = _has(pair, "landmarks")
            result = evaluate_files(
                None if disp_dir is None else Path(disp_dir) / pair.disp_name,
                fixed_seg=pair.fixed.label if segs else None,
                moving_seg=pair.moving.label if segs else None,
                fixed_image=pair.fixed.image,
                moving_image=pair.moving.image,
                fixed_landmarks=pair.fixed.landmarks if lms else None,
                moving_landmarks=pair.moving.landmarks if lms else None,
                labels=label_ids,
                ndv_mask=ndv_mask,
                spacing=dataset.spacing,
                shape=shape,
                threads=threads,
            )
            writer.writerows(pair_rows(method, dataset.name, pair, result))
            handle.flush()
    return len(pairs)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically (no NaN / inf tokens: see :func:`to_json_value`)."""
    with io.atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
