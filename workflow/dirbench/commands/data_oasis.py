"""``dirbench data oasis``: fetch and prepare neurite-OASIS with the paper's split (dirbench.data.oasis)."""

from __future__ import annotations

import argparse

NAME = "data oasis"
HELP = "Download (or take) the neurite-oasis v1.0 tar and prepare it (LIA->RAS, paper's split) in --out."


def shape_size(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a shape needs positive sizes")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="dataset folder to create (dataset.json, images/, labels/)",
    )
    parser.add_argument(
        "--url", help="download address (default: the neurite-oasis v1.0 tar, surfer.nmr.mgh.harvard.edu)"
    )
    parser.add_argument(
        "--md5",
        help="expected md5 of the tar, checked for a download and for --archive "
        "(default: the v1.0 release's published md5); 'none' skips the check",
    )
    parser.add_argument("--archive", metavar="PATH", help="use this local tar instead of downloading")
    parser.add_argument(
        "--split-dir", metavar="DIR", help="folder with list_*.txt / pair_*.txt (default: the paper's split)"
    )
    parser.add_argument(
        "--expected-shape",
        nargs=3,
        type=shape_size,
        metavar=("X", "Y", "Z"),
        help="image shape after LIA->RAS (default: 160 224 192)",
    )
    parser.add_argument("--verify", action="store_true", help="on a prepared folder, re-hash every file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from dirbench.data.oasis import prepare_oasis

    kwargs: dict = {"verify": args.verify, "progress": not args.no_progress}
    if args.url:
        kwargs["url"] = args.url
    if args.md5:
        kwargs["md5"] = None if args.md5.lower() == "none" else args.md5
    if args.archive:
        kwargs["archive"] = args.archive
    if args.split_dir:
        kwargs["split_dir"] = args.split_dir
    if args.expected_shape:
        kwargs["expected_shape"] = tuple(args.expected_shape)
    result = prepare_oasis(args.out, **kwargs)
    state = "prepared" if result.created else "already prepared (nothing to do)"
    print(f"OASIS {state}: {result.n_images} images, {result.dataset_json}")
    return 0
