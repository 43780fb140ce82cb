"""``dirbench lumir-evaluate``: the LUMIR validation metrics of a submission zip, computed locally."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "lumir-evaluate"
HELP = "compute LUMIR validation metrics (NDV, and DSC/HD95/TRE where annotations exist) for a submission zip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("zip", type=Path, help="the submission zip (checked with lumir-validate first)")
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="the LUMIR folder holding imagesVal/ (moving images give the NDV mask)")
    parser.add_argument("--labels-dir", type=Path, default=None,
                        help="label maps named like the images (default: DATA_DIR/labelsVal)")
    parser.add_argument("--landmarks-dir", type=Path, default=None,
                        help="landmark label volumes named like the images (default: DATA_DIR/landmarksVal)")
    parser.add_argument("--dataset-json", type=Path, default=None,
                        help="LUMIR_dataset.json naming the validation pairs (default: the bundled official one)")
    parser.add_argument("--json", required=True, type=Path, help="where to write the metrics JSON")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="expected grid (default: LUMIR's 160 224 192)")
    parser.add_argument("--threads", type=int, default=None, help="worker threads for the Jacobian passes")


def run(args: argparse.Namespace) -> int:
    from dirbench.io import atomic_path
    from dirbench.lumir import LEADERBOARD_METRICS, LUMIR_SHAPE, evaluate_submission

    shape = tuple(args.shape) if args.shape else LUMIR_SHAPE
    result = evaluate_submission(args.zip, args.data_dir, args.labels_dir, args.landmarks_dir, args.dataset_json,
                                 shape, args.threads, progress=lambda line: print(line, file=sys.stderr))
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    n_cases = len(result["cases"])
    print(f"LUMIR validation metrics of {args.zip} (local; NDV mask: {result['ndv_mask']}):")
    for metric in LEADERBOARD_METRICS:
        agg = result["aggregates"][metric]
        if agg["n"]:
            print(f"  {metric:<26} {agg['n']:>2} cases  mean {agg['mean']:.4f}  std {agg['std']:.4f}  "
                  f"30% {agg['30']:.4f}")
        else:
            print(f"  {metric:<26}  0 cases  (no annotations found)")
    skipped = sum(bool(v) for v in result["not_evaluated"].values())
    print(f"{skipped} of {n_cases} pairs lacked some annotation (see 'not_evaluated' in the JSON); wrote {args.json}")
    return 0
