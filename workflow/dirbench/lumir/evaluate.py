"""Local evaluation of a LUMIR submission with the official metrics, on whatever annotations are at hand."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dirbench import metrics
from dirbench.errors import UserError
from dirbench.io import load_image, load_labels
from dirbench.lumir.pairs import LUMIR_SHAPE, LumirPair, config_pairs, validation_pairs
from dirbench.lumir.validate import iter_fields, validate_submission

__all__ = ["DSC", "HD95", "LEADERBOARD_METRICS", "NDV", "TRE", "aggregate", "evaluate_submission"]


DSC, HD95, TRE, NDV = "DSC", "HD95", "TRE_lm", "Non-diffeomorphic Volumes"
"""The metric names of the official evaluation configs (the keys of the leaderboard's JSON)."""

#: The leaderboard's metrics, in its order, each with the :data:`dirbench.metrics.REGISTRY` metric behind it.
LEADERBOARD_METRICS: dict[str, str] = {DSC: "dice", HD95: "hd95", TRE: "tre", NDV: "ndv"}


def aggregate(values: Sequence[float]) -> dict[str, float]:
    """The LUMIR evaluator's aggregate of case values: ``mean``, ``std`` (ddof 0) and ``"30"``
    (``np.quantile(values, 0.3)``), plus ``n``. NaN and inf propagate, as in the official code."""
    arr = np.asarray(values, np.float64)
    if not arr.size:
        return {"mean": math.nan, "std": math.nan, "30": math.nan, "n": 0}
    with np.errstate(invalid="ignore"):
        return {"mean": float(arr.mean()), "std": float(arr.std()), "30": float(np.quantile(arr, 0.3)),
                "n": int(arr.size)}


def _annotations(folder: Path, pair: LumirPair, shape: tuple[int, int, int]) -> tuple[dict, list[str]]:
    """Load ``folder/<fixed image name>`` and ``folder/<moving image name>`` if both exist."""
    paths = [folder / Path(rel).name for rel in (pair.fixed_image, pair.moving_image)]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        return {}, absent
    return {"fixed": load_labels(paths[0], shape), "moving": load_labels(paths[1], shape)}, []


def evaluate_submission(
    zip_path: str | Path,
    data_dir: str | Path,
    labels_dir: str | Path | None = None,
    landmarks_dir: str | Path | None = None,
    dataset_json: str | Path | None = None,
    expected_shape: tuple[int, int, int] = LUMIR_SHAPE,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The LUMIR-2024 validation metrics of a submission, on whatever annotations are at hand.

    As the official evaluator (spec §4–§6): NDV (%) for every pair whose moving image
    ``data_dir/imagesVal/…`` exists, masked by moving image > 0 (the LUMIR 2024 rule); DSC and HD95
    over the 133 LUMIR labels (0 included) for the 29 pairs of the segmentation config whose fixed and
    moving label maps exist in ``labels_dir`` (default ``data_dir/labelsVal``, same file names as the
    images); TRE (mm) for the 9 pairs of the landmark config whose landmark volumes exist in
    ``landmarks_dir`` (default ``data_dir/landmarksVal``). Per metric the ``aggregates`` are
    :func:`aggregate` over the cases that have it. ``coverage`` lists those cases per metric and
    ``not_evaluated`` says, per case, what was skipped and which file was missing.

    Raises :class:`UserError` if the zip fails :func:`validate_submission` (the leaderboard would
    reject it too) or a present annotation file is unreadable or of the wrong shape.
    """
    zip_path, data_dir = Path(zip_path), Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: LUMIR data folder not found")
    labels_dir = Path(labels_dir) if labels_dir is not None else data_dir / "labelsVal"
    landmarks_dir = Path(landmarks_dir) if landmarks_dir is not None else data_dir / "landmarksVal"
    report = validate_submission(zip_path, dataset_json, expected_shape)
    if not report.ok:
        shown = "; ".join(str(p) for p in report.errors[:3])
        raise UserError(f"{zip_path}: not a valid submission ({len(report.errors)} error(s), e.g. {shown}); "
                        "run dirbench lumir-validate for the full list")
    annotations = [  # (cases of the config, folder, what a missing file costs, evaluate_pair keyword stem)
        ({p.case for p in config_pairs("Segmentation")}, labels_dir, f"{DSC}, {HD95}: no label map", "seg"),
        ({p.case for p in config_pairs("Landmark")}, landmarks_dir, f"{TRE}: no landmark volume", "landmarks"),
    ]
    labels = metrics.lumir_labels()
    pairs = validation_pairs(dataset_json)
    cases: dict[str, dict[str, Any]] = {}
    skipped: dict[str, list[str]] = {}
    for k, (pair, disp) in enumerate(iter_fields(report, pairs), 1):
        notes: list[str] = []
        kwargs: dict[str, Any] = {"labels": labels}
        moving_image = data_dir / pair.moving_image
        if moving_image.is_file():
            kwargs["moving_image"] = load_image(moving_image, expected_shape)
        else:
            notes.append(f"{NDV}: no moving image {moving_image}")
        for config_cases, folder, what, key in annotations:
            if pair.case not in config_cases:
                continue
            volumes, absent = _annotations(folder, pair, expected_shape)
            if absent:
                notes.append(f"{what} {', '.join(absent)}")
            else:
                kwargs.update({f"fixed_{key}": volumes["fixed"], f"moving_{key}": volumes["moving"]})
        kind = "moving" if "moving_image" in kwargs else "none"
        wanted = [name for name in LEADERBOARD_METRICS.values() if name != "ndv" or kind == "moving"]
        result = metrics.evaluate_pair(disp, ndv_mask_kind=kind, metrics=wanted, threads=threads, **kwargs)
        case: dict[str, Any] = {}
        for key, name in LEADERBOARD_METRICS.items():
            if name in result:
                value = result[name]
                detailed = value.items.tolist() if value.item_kind is not None else value.value
                case[key] = {"mean": value.value, "detailed": detailed}
        cases[pair.case] = case
        if notes:
            skipped[pair.case] = notes
        if progress is not None:
            shown = ", ".join(f"{m} {v['mean']:.4f}" for m, v in case.items()) or "nothing to evaluate"
            progress(f"[{k}/{len(pairs)}] {pair.case}: {shown}")
    coverage = {m: [c for c, v in cases.items() if m in v] for m in LEADERBOARD_METRICS}
    return {
        "name": "LUMIR",
        "submission": str(zip_path),
        "data_dir": str(data_dir),
        "labels_dir": str(labels_dir),
        "landmarks_dir": str(landmarks_dir),
        "ndv_mask": "moving image > 0 (LUMIR 2024)",
        "aggregates": {m: aggregate([cases[c][m]["mean"] for c in coverage[m]]) for m in LEADERBOARD_METRICS},
        "coverage": coverage,
        "not_evaluated": skipped,
        "cases": cases,
    }
