"""``dirbench lumir-validate``: check a LUMIR submission zip before uploading it."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "lumir-validate"
HELP = "check a LUMIR validation submission zip (names, layout, shape, dtype, finiteness); exit 1 if invalid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("zip", type=Path, help="the submission zip")
    parser.add_argument("--dataset-json", type=Path, default=None,
                        help="LUMIR_dataset.json naming the validation pairs (default: the bundled official one)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="expected grid (default: LUMIR's 160 224 192)")


def run(args: argparse.Namespace) -> int:
    from dirbench.lumir import LUMIR_SHAPE, report_lines, validate_submission

    shape = tuple(args.shape) if args.shape else LUMIR_SHAPE
    report = validate_submission(args.zip, args.dataset_json, shape)
    print(report_lines(report), end="")
    return 0 if report.ok else 1
