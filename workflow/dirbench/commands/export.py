"""``dirbench export``: convert a displacement field between ours, ITK/ANTs and Greedy (both ways)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "export"
FORMATS = ("dirbench", "itk", "greedy")
HELP = "convert a displacement field: ours <-> ITK/ANTs (antsApplyTransforms, SimpleITK) or Greedy warp"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--disp", required=True, type=Path,
                   help="the field to convert, in any format (ours [X,Y,Z,3] voxels, or an ITK/ANTs/Greedy warp)")
    p.add_argument("--format", required=True, choices=FORMATS,  # dirbench.field_formats.FORMATS
                   help="output format: itk (LPS mm [X,Y,Z,1,3] vector NIfTI, for ANTs/SimpleITK), greedy (the "
                   "same file, for greedy -r), or dirbench (read an ITK/Greedy warp back into our voxel units)")
    p.add_argument("--out", required=True, type=Path, help="output .nii.gz")


def run(args: argparse.Namespace) -> int:
    from dirbench.field_formats import load_field, save_field

    field = load_field(args.disp)
    save_field(args.out, field.disp, field.affine, args.format)
    print(json.dumps({"out": str(args.out), "from": field.format, "to": args.format}))
    return 0
