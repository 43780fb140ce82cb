"""``dirbench lumir-zero``: the all-zero LUMIR submission (a smoke test of the upload path)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "lumir-zero"
HELP = "write the all-zero LUMIR validation submission (leaderboard: Dice 0.5657, TRE 4.3543, NDV 0, HD95 4.7876)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="the zip to write (a manifest OUT.json goes beside it)")
    parser.add_argument("--dataset-json", type=Path, default=None,
                        help="LUMIR_dataset.json naming the validation pairs (default: the bundled official one)")
    parser.add_argument("--folder", default=None, help="the zip's top folder (default: OUT's name without .zip)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="grid (default: LUMIR's 160 224 192)")


def run(args: argparse.Namespace) -> int:
    from dirbench.lumir import LUMIR_SHAPE, zero_submission

    shape = tuple(args.shape) if args.shape else LUMIR_SHAPE
    manifest = zero_submission(args.out, args.dataset_json, args.folder, shape)
    print(f"wrote {args.out}: {len(manifest['members'])} zero fields in {manifest['folder']}/ "
          f"({manifest['zip_bytes'] / 1e6:.1f} MB); manifest {args.out}.json")
    return 0
