"""``dirbench data demo``: generate the embedded offline demo dataset (see :mod:`dirbench.data.demo`).

The generator flags are generated from :class:`dirbench.data.demo.DemoParams`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NAME = "data demo"
HELP = "generate the offline demo dataset (MNI152 under random diffeomorphisms) with ground-truth warps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dirbench.data.demo import DemoParams

    parser.add_argument("--out", required=True, type=Path, help="folder to write (dataset.json, NIfTI files)")
    parser.add_argument("--force", action="store_true",
                        help="regenerate a folder that holds a demo dataset made with other settings")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="print only the final line")
    DemoParams.add_arguments(parser.add_argument_group("generator settings"))


def run(args: argparse.Namespace) -> int:
    from dirbench.data.demo import DemoParams, generate, split_sizes
    from dirbench.errors import UserError
    from methods.config import ConfigError

    try:
        params = DemoParams.from_dict(DemoParams.arguments_given(args))
    except ConfigError as err:
        raise UserError(str(err)) from None
    start = time.perf_counter()
    log = None if args.quiet else lambda msg: print(msg, file=sys.stderr)
    path = generate(args.out, params, log=log, force=args.force)
    n_train, n_val, n_test = split_sizes(params.subjects)
    print(f"{path}: {params.subjects} subjects ({n_train} training, {n_val} validation, {n_test} test) "
          f"at {params.spacing:g} mm, seed {params.seed} [{time.perf_counter() - start:.1f} s]")
    return 0
