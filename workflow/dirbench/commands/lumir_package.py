"""``dirbench lumir-package``: pack 38 LUMIR validation displacement fields into a submission zip."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "lumir-package"
HELP = "pack disp_{fixed}_{moving}.nii.gz for the 38 LUMIR validation pairs into a leaderboard zip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--disp-dir", required=True, type=Path,
                        help="folder with disp_{fixed}_{moving}.nii.gz (voxel units, on the fixed grid)")
    parser.add_argument("--dataset-json", type=Path, default=None,
                        help="LUMIR_dataset.json naming the validation pairs (default: the bundled official one)")
    parser.add_argument("--out", required=True, type=Path, help="the zip to write (a manifest OUT.json goes beside it)")
    parser.add_argument("--folder", default=None, help="the zip's top folder (default: OUT's name without .zip)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="expected grid (default: LUMIR's 160 224 192)")


def run(args: argparse.Namespace) -> int:
    from dirbench.lumir import LUMIR_SHAPE, package_submission

    shape = tuple(args.shape) if args.shape else LUMIR_SHAPE
    manifest = package_submission(args.disp_dir, args.out, args.dataset_json, args.folder, shape)
    converted = sum(m["converted"] for m in manifest["members"])
    print(f"wrote {args.out}: {len(manifest['members'])} fields in {manifest['folder']}/ "
          f"({manifest['zip_bytes'] / 1e6:.1f} MB, {converted} converted to float32 [X, Y, Z, 3]); "
          f"manifest {args.out}.json")
    return 0
