"""``dirbench data demo``: generate the embedded offline demo dataset (see :mod:`dirbench.data.demo`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NAME = "data demo"
HELP = "generate the offline demo dataset (MNI152 under random diffeomorphisms) with ground-truth warps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="folder to write (dataset.json, NIfTI files)")
    parser.add_argument("--subjects", type=int, default=24,
                        help="number of subjects (default 24: 16 training, 3 validation, 5 test; at least 6)")
    parser.add_argument("--spacing", type=float, default=4.0,
                        help="isotropic voxel size in mm, at most 8 (default 4: a 48x64x48 grid)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (a seed always gives the same arrays)")
    parser.add_argument("--quiet", action="store_true", help="print only the final line")


def run(args: argparse.Namespace) -> int:
    from dirbench.data.demo import DemoParams, generate, split_sizes

    params = DemoParams(subjects=args.subjects, spacing=args.spacing, seed=args.seed)
    start = time.perf_counter()
    path = generate(args.out, params, log=None if args.quiet else lambda msg: print(msg, file=sys.stderr))
    n_train, n_val, n_test = split_sizes(params.subjects)
    print(f"{path}: {params.subjects} subjects ({n_train} training, {n_val} validation, {n_test} test) "
          f"at {params.spacing:g} mm, seed {params.seed} [{time.perf_counter() - start:.1f} s]")
    return 0
