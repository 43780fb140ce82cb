"""``dirbench register``: apply a trained checkpoint (or Greedy) to one pair or a pair list."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "register"
HELP = "register a pair (or a pair list) with a trained checkpoint or --method greedy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="RUN_DIR/best.pt of a trained method")
    src.add_argument("--method", choices=["greedy"], help="a method that needs no checkpoint")
    p.add_argument("--greedy-config", metavar="JSON", help='Greedy settings, e.g. \'{"threads": 4}\'')
    p.add_argument("--fixed", type=Path, help="fixed image (single-pair mode)")
    p.add_argument("--moving", type=Path, help="moving image (single-pair mode)")
    p.add_argument("--out", type=Path, help="output displacement .nii.gz (single-pair mode)")
    p.add_argument("--warped", type=Path, help="also write the warped moving image (trilinear)")
    p.add_argument("--moving-seg", type=Path, help="moving segmentation to warp (nearest)")
    p.add_argument("--warped-seg", type=Path, help="where to write the warped segmentation")
    p.add_argument("--pairs", metavar="DATASET_JSON:LIST", help="batch mode: e.g. data/demo/dataset.json:test")
    p.add_argument("--out-dir", type=Path, help="batch mode: folder for disp_{fixed}_{moving}.nii.gz (and "
                   "inv_{fixed}_{moving}.nii.gz, the inverse field of an inverse-consistent model)")
    p.add_argument("--overwrite", action="store_true", help="batch mode: redo pairs already written")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--threads", type=int, help="CPU threads (default: the job's)")


def run(args: argparse.Namespace) -> int:
    from dirbench.dataset import parse_pair_spec
    from dirbench.errors import UserError
    from dirbench.inference import Registrar, register_pairs
    from dirbench.io import load_affine, load_image, load_labels, save_disp, save_image, save_labels
    from dirbench.runtime import set_threads
    from dirbench.warp import warp_array

    set_threads(args.threads)
    if args.method == "greedy":
        try:
            config = json.loads(args.greedy_config) if args.greedy_config else {}
        except json.JSONDecodeError as err:
            raise UserError(f"--greedy-config: not valid JSON: {err}") from None
        registrar = Registrar.greedy(config)
    else:
        registrar = Registrar.from_checkpoint(args.checkpoint, device=args.device, amp=args.amp)

    if args.pairs:
        if not args.out_dir:
            raise UserError("--pairs needs --out-dir")
        dataset, name = parse_pair_spec(args.pairs)
        runtime = register_pairs(registrar, dataset.pairs(name), args.out_dir, overwrite=args.overwrite)
        print(f"wrote {len(dataset.pairs(name))} displacement(s) to {args.out_dir} (costs in {runtime})")
        return 0

    if not (args.fixed and args.moving and args.out):
        raise UserError("single-pair mode needs --fixed, --moving and --out (or use --pairs and --out-dir)")
    if bool(args.moving_seg) != bool(args.warped_seg):
        raise UserError("--moving-seg and --warped-seg go together")
    disp, _, cost = registrar(args.fixed, args.moving)
    affine = load_affine(args.fixed)
    save_disp(args.out, disp, affine)
    if args.warped:
        save_image(args.warped, warp_array(load_image(args.moving), disp, order=1), affine)
    if args.moving_seg:
        save_labels(args.warped_seg, warp_array(load_labels(args.moving_seg), disp, order=0), affine)
    print(json.dumps({"disp": str(args.out), **cost}))
    return 0
