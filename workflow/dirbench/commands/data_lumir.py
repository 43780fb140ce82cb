"""``dirbench data lumir``: prepare LUMIR-2024 train+val from the official zip (dirbench.data.lumir)."""

from __future__ import annotations

import argparse

from dirbench.commands.data_oasis import shape_size

NAME = "data lumir"
HELP = "Prepare LUMIR-2024 (train+val zip via gdown, or --archive) in --out, with sha256 records."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="dataset folder to create (dataset.json, imagesTr/, imagesVal/)",
    )
    parser.add_argument(
        "--archive",
        metavar="PATH",
        help="your copy of LUMIR_L2R24_TrainVal.zip (default: fetch it from Google Drive with gdown)",
    )
    parser.add_argument(
        "--dataset-json",
        metavar="PATH",
        help="official LUMIR_dataset.json (default: the copy shipped with dirbench)",
    )
    parser.add_argument(
        "--sha256", help="expected sha256 of the zip (else the first run records it in checksums.json)"
    )
    parser.add_argument(
        "--expected-shape",
        nargs=3,
        type=shape_size,
        metavar=("X", "Y", "Z"),
        help="image shape (default: 160 224 192)",
    )
    parser.add_argument("--verify", action="store_true", help="re-hash the zip and every prepared file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from dirbench.data.lumir import prepare_lumir

    kwargs: dict = {"verify": args.verify, "progress": not args.no_progress, "sha256": args.sha256}
    if args.archive:
        kwargs["archive"] = args.archive
    if args.dataset_json:
        kwargs["dataset_json"] = args.dataset_json
    if args.expected_shape:
        kwargs["expected_shape"] = tuple(args.expected_shape)
    result = prepare_lumir(args.out, **kwargs)
    state = "prepared" if result.created else "already prepared (nothing to do)"
    print(f"LUMIR {state}: {result.n_images} images, {result.dataset_json}")
    return 0
