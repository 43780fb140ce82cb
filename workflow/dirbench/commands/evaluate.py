"""``dirbench evaluate``: registration metrics of one pair (JSON) or a dataset pair list (tidy CSV).

One pair::

    dirbench evaluate --disp disp_0438_0439.nii.gz --fixed-seg seg0438.nii.gz --moving-seg seg0439.nii.gz \\
        --moving-image img0439.nii.gz --labels oasis --json metrics.json

A pair list of a prepared dataset, streamed to a tidy CSV (the workflow's form)::

    dirbench evaluate --pairs data/oasis/dataset.json:test --disp-dir results/oasis/dp/disp \\
        --method dp --csv results/oasis/dp/metrics.csv --labels oasis

``--zero`` evaluates the all-zero field (the "Initial" row) without displacement files. The metrics are those
of :data:`dirbench.metrics.REGISTRY` that the inputs allow. Both modes print a one-line summary (the means over
the pairs) on stdout; the pair-list mode shows a progress bar on stderr when it is a terminal.

Voxel size (HD95, TRE, EPE, IC error): the dataset's ``spacing`` in pair-list mode; in one-pair mode
``--spacing``, or else the header of the fixed segmentation (or fixed image, fixed landmarks, displacement),
so both modes give the same numbers for the same files.

Encoding of undefined values: in the JSON, NaN (a label absent from the fixed or the moving
segmentation, a vanished landmark) is ``null`` and infinity (HD95 of a label that vanished after
warping) is the string ``"inf"``; the JSON stays valid. In the CSV the values are Python float
reprs, ``nan`` and ``inf``, which pandas and ``float()`` read back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "evaluate"
HELP = "Dice, HD95, SDlogJ, NDV, folded voxels, TRE, EPE and IC error of one pair (--json) or a pair list (--csv)"

_EPILOG = """\
modes:
  one pair:   --disp D (or --zero) [--fixed-seg F --moving-seg M] [--fixed-image --moving-image]
              [--fixed-landmarks --moving-landmarks] [--inverse V] [--true-disp T] --json OUT
  pair list:  --pairs DATASET_JSON:LIST (--disp-dir DIR | --zero) --method NAME --csv OUT

metrics (those the inputs allow):
  dice, hd95 (per label; --fixed-seg/--moving-seg), sdlogj, ndv, nondiff_voxels (%|J|<=0), tre (landmarks),
  epe (a dataset with "ground_truth", or --true-disp), ic_error (inv_{fixed}_{moving}.nii.gz beside the
  displacement, or --inverse); one pair also gives sdlogj_raw.

undefined values:
  JSON: NaN -> null, infinity -> "inf" (HD95 of a label that vanished after warping).
  CSV (columns method,dataset,fixed,moving,metric,label,value): "nan" and "inf".
  NaN marks a label absent from the fixed or the moving segmentation (excluded from the mean).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    one = parser.add_argument_group("one pair")
    one.add_argument("--disp", type=Path, help="displacement NIfTI [X,Y,Z,3] or [3,X,Y,Z], voxel units")
    one.add_argument("--fixed-seg", type=Path, help="fixed label map (Dice, HD95; > 0 is the EPE / IC mask)")
    one.add_argument("--moving-seg", type=Path, help="moving label map (Dice, HD95)")
    one.add_argument("--fixed-image", type=Path, help="fixed image (for --ndv-mask fixed)")
    one.add_argument("--moving-image", type=Path, help="moving image (for --ndv-mask moving)")
    one.add_argument("--fixed-landmarks", type=Path, help="fixed landmark label volume (LUMIR TRE)")
    one.add_argument("--moving-landmarks", type=Path, help="moving landmark label volume (LUMIR TRE)")
    one.add_argument("--inverse", type=Path, help="the model's inverse field on the moving grid (IC error)")
    one.add_argument("--true-disp", type=Path, help="the pair's true displacement (EPE)")
    one.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                     help="voxel size in mm for HD95, TRE, EPE and the IC error (default: the header of the "
                     "fixed segmentation, image or landmarks, else of the displacement)")
    one.add_argument("--json", type=Path, help="write every metric, with per-label lists, to this JSON")
    many = parser.add_argument_group("pair list")
    many.add_argument("--pairs", metavar="DATASET_JSON:LIST", help="e.g. data/oasis/dataset.json:test")
    many.add_argument("--disp-dir", type=Path, help="folder of disp_{fixed}_{moving}.nii.gz files "
                      "(and inv_{fixed}_{moving}.nii.gz inverse fields, if any)")
    many.add_argument("--method", help="value of the CSV 'method' column (e.g. dp, greedy, initial)")
    many.add_argument("--csv", type=Path, help="tidy CSV to write (atomically)")
    many.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    common = parser.add_argument_group("both")
    common.add_argument("--zero", action="store_true", help="evaluate the all-zero field ('Initial')")
    common.add_argument("--labels", help="oasis (1-35), lumir (133 ids) or a list like 1,2,5-9 "
                        "(default: oasis for one pair, the dataset's labels for a pair list)")
    common.add_argument("--ndv-mask", choices=("moving", "fixed", "none"), default="moving",
                        help="NDV / %%|J|<=0 mask: moving image > 0 (LUMIR 2024, default), fixed image > 0 "
                        "(LUMIR 2025) or every voxel")
    common.add_argument("--threads", type=int, help="worker threads (default: usable cores, at most 4)")


def _labels(spec: str) -> list[int]:
    """``--labels`` parsed, its ValueError as a one-line UserError naming the flag."""
    from dirbench.errors import UserError
    from dirbench.metrics import parse_labels

    try:
        return parse_labels(spec)
    except ValueError as err:
        raise UserError(f"--labels {spec!r}: {err}") from None


def run(args: argparse.Namespace) -> int:
    from dirbench.errors import UserError

    if args.pairs is not None:
        return _run_batch(args)
    if args.json is None:
        raise UserError("give --json OUT for one pair, or --pairs DATASET_JSON:LIST with --csv OUT")
    if (args.disp is None) == (not args.zero):
        raise UserError("give exactly one of --disp and --zero")
    if (args.fixed_seg is None) != (args.moving_seg is None):
        raise UserError("give both --fixed-seg and --moving-seg, or neither")
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        raise UserError("give both --fixed-landmarks and --moving-landmarks, or neither")
    if args.ndv_mask != "none" and getattr(args, f"{args.ndv_mask}_image") is None:
        raise UserError(f"--ndv-mask {args.ndv_mask} needs the {args.ndv_mask} image (or use --ndv-mask none)")
    if args.zero and args.fixed_seg is None and args.fixed_image is None and args.fixed_landmarks is None:
        raise UserError("--zero needs --fixed-seg, --fixed-image or --fixed-landmarks for the grid")
    from dirbench import evaluation
    from dirbench.metrics import DEFAULT_METRICS

    result = evaluation.evaluate_files(
        args.disp,
        fixed_seg=args.fixed_seg,
        moving_seg=args.moving_seg,
        fixed_image=args.fixed_image,
        moving_image=args.moving_image,
        fixed_landmarks=args.fixed_landmarks,
        moving_landmarks=args.moving_landmarks,
        inverse=args.inverse,
        true_disp=args.true_disp,
        labels=_labels(args.labels or "oasis"),
        ndv_mask=args.ndv_mask,
        spacing=None if args.spacing is None else tuple(args.spacing),
        metric_names=(*DEFAULT_METRICS, "sdlogj_raw"),
        threads=args.threads,
    )
    payload = evaluation.result_to_json(result, disp=None if args.disp is None else str(args.disp))
    evaluation.write_json(args.json, payload)
    print(f"evaluate: {evaluation.format_values(result.case_metrics())} -> {args.json}")
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    from dirbench import evaluation
    from dirbench.dataset import parse_pair_spec
    from dirbench.errors import UserError

    if args.csv is None or args.method is None:
        raise UserError("--pairs needs --csv OUT and --method NAME")
    one_pair = [flag for flag in ("json", "disp", "inverse", "true_disp", "spacing") if getattr(args, flag) is not None]
    if one_pair:
        flags = ", ".join("--" + flag.replace("_", "-") for flag in one_pair)
        raise UserError(f"{flags}: for one pair only; with --pairs use --csv / --disp-dir (the dataset gives the rest)")
    dataset, pair_list = parse_pair_spec(args.pairs)
    summary = evaluation.evaluate_dataset(
        dataset,
        pair_list,
        args.csv,
        method=args.method,
        disp_dir=args.disp_dir,
        zero=args.zero,
        labels=None if args.labels is None else _labels(args.labels),
        ndv_mask=args.ndv_mask,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(summary.line())
    return 0
