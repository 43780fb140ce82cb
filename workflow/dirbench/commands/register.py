"""``dirbench register``: apply a trained checkpoint (or Greedy) to one pair or a pair list.

The images may have any shape, orientation and voxel size, fixed and moving on different grids: a trained
model gets them resampled onto its training grid and returns the displacement on the fixed image's own
grid (:mod:`dirbench.native`); Greedy works on the native grids itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "register"
HELP = "register a pair (or a pair list) with a trained checkpoint or --method greedy"
FORMATS = ("dirbench", "itk", "greedy")  # dirbench.field_formats.FORMATS


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="RUN_DIR/best.pt of a trained method")
    src.add_argument("--method", choices=["greedy"], help="a method that needs no checkpoint")
    p.add_argument("--greedy-config", metavar="JSON", help='Greedy settings, e.g. \'{"threads": 4}\'')
    p.add_argument("--fixed", type=Path, help="fixed image (single-pair mode), any grid")
    p.add_argument("--moving", type=Path, help="moving image (single-pair mode), any grid, aligned affinely to fixed")
    p.add_argument("--out", type=Path, help="output displacement .nii.gz on the fixed grid (single-pair mode)")
    p.add_argument("--format", choices=FORMATS, default="dirbench",
                   help="--out's format: dirbench (voxel units, default), itk (ANTs/SimpleITK) or greedy")
    p.add_argument("--warped", type=Path, help="also write the warped moving image (trilinear)")
    p.add_argument("--moving-seg", type=Path, help="moving segmentation to warp (nearest)")
    p.add_argument("--warped-seg", type=Path, help="where to write the warped segmentation")
    p.add_argument("--pairs", metavar="DATASET_JSON:LIST", help="batch mode: e.g. data/demo/dataset.json:test")
    p.add_argument("--out-dir", type=Path, help="batch mode: folder for disp_{fixed}_{moving}.nii.gz (and "
                   "inv_{fixed}_{moving}.nii.gz, the inverse field of an inverse-consistent model)")
    p.add_argument("--overwrite", action="store_true", help="batch mode: redo pairs already written")
    p.add_argument("--no-progress", action="store_true", help="batch mode: no progress bar (off anyway off a terminal)")
    p.add_argument("--centre", choices=["image", "mass"], default="image",
                   help="checkpoint: centre the model's box on the fixed image's centre (default) or centre of mass")
    p.add_argument("--normalise", action="store_true",
                   help="checkpoint: min-max intensities to [0, 1] instead of the training scale (other units)")
    p.add_argument("--modality", help="checkpoint: the images' modality, e.g. T1w (default: a BIDS file-name "
                   "suffix); another than the training data's is refused; 'any' skips the check")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="mixed precision on CUDA")
    p.add_argument("--threads", type=int, help="CPU threads (default: the job's)")


def run(args: argparse.Namespace) -> int:
    from dirbench.dataset import parse_pair_spec
    from dirbench.errors import UserError
    from dirbench.field_formats import save_field
    from dirbench.inference import Registrar, register_pairs
    from dirbench.io import load_affine, save_image, save_labels
    from dirbench.native import NativeImage
    from dirbench.runtime import set_threads
    from dirbench.warp import warp_image

    set_threads(args.threads)
    if args.pairs and args.format != "dirbench":
        raise UserError("--format applies to single-pair mode; a batch writes our format (what evaluate reads); "
                        "convert a field with dirbench export")
    if args.method == "greedy":
        model_only = [flag for flag, given in (("--centre", args.centre != "image"), ("--normalise", args.normalise),
                                               ("--modality", args.modality is not None)) if given]
        if model_only:
            raise UserError(f"{', '.join(model_only)}: only for --checkpoint (Greedy works on the native grids)")
        try:
            config = json.loads(args.greedy_config) if args.greedy_config else {}
        except json.JSONDecodeError as err:
            raise UserError(f"--greedy-config: not valid JSON: {err}") from None
        registrar = Registrar.greedy(config)
    else:
        registrar = Registrar.from_checkpoint(args.checkpoint, device=args.device, amp=args.amp, centre=args.centre,
                                              normalise=args.normalise, modality=args.modality)

    if args.pairs:
        if not args.out_dir:
            raise UserError("--pairs needs --out-dir")
        dataset, name = parse_pair_spec(args.pairs)
        pairs = dataset.pairs(name)
        runtime = register_pairs(registrar, pairs, args.out_dir, overwrite=args.overwrite,
                                 progress=not args.no_progress)
        print(f"wrote {len(pairs)} displacement(s) to {args.out_dir} (costs in {runtime})")
        return 0

    if not (args.fixed and args.moving and args.out):
        raise UserError("single-pair mode needs --fixed, --moving and --out (or use --pairs and --out-dir)")
    if bool(args.moving_seg) != bool(args.warped_seg):
        raise UserError("--moving-seg and --warped-seg go together")
    disp, _, cost = registrar(args.fixed, args.moving)
    affine = load_affine(args.fixed)  # the registrar checked the image
    save_field(args.out, disp, affine, args.format)
    if args.warped:
        moving = NativeImage.load(args.moving)
        save_image(args.warped, warp_image(moving.array, moving.grid.affine, disp, affine, order=1), affine)
    if args.moving_seg:
        seg = NativeImage.load(args.moving_seg, labels=True)
        save_labels(args.warped_seg, warp_image(seg.array, seg.grid.affine, disp, affine, order=0), affine)
    print(json.dumps({"disp": str(args.out), "format": args.format, **cost}))
    return 0
