"""``dirbench warp``: pull an image or a label map through a displacement field, on any grid."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "warp"
HELP = "apply a displacement (ours, ITK/ANTs or Greedy) to an image (linear) or a label map (nearest)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--disp", required=True, type=Path,
                   help="the displacement: ours [X,Y,Z,3] voxels, or an ITK/ANTs/Greedy [X,Y,Z,1,3] warp (detected)")
    p.add_argument("--image", required=True, type=Path, help="the image to warp (the moving image, any grid)")
    p.add_argument("--out", required=True, type=Path, help="the warped image, written on the displacement's grid")
    p.add_argument("--labels", action="store_true",
                   help="IMAGE is a label map: nearest-neighbour sampling, integer output (default: trilinear)")


def run(args: argparse.Namespace) -> int:
    from dirbench.field_formats import load_field
    from dirbench.io import save_image, save_labels
    from dirbench.native import NativeImage
    from dirbench.warp import warp_image

    field = load_field(args.disp)
    moving = NativeImage.load(args.image, labels=args.labels)
    warped = warp_image(moving.array, moving.grid.affine, field.disp, field.affine, order=0 if args.labels else 1)
    (save_labels if args.labels else save_image)(args.out, warped, field.affine)
    print(json.dumps({"warped": str(args.out), "disp_format": field.format, "shape": list(warped.shape)}))
    return 0
