"""``dirbench figure KIND``: the paper's figures (PREFIX.pdf + PREFIX.png).

- ``scaling``: ``--csv`` (size variants) ``[--reference CSV] [--summary JSON ...] --out PREFIX``
- ``trainsize``: ``--csv`` (``method@N`` runs and the full run) ``[--full-size N] [--summary JSON ...]
  [--reference CSV] --out PREFIX``
- ``qualitative``: ``--fixed NII --moving NII --disp METHOD=NII ... [--axis A] [--slice I] --out PREFIX``, or
  ``--pairs DATASET_JSON:LIST --index K --disp METHOD=DIR ...`` (each DIR holding ``disp_{fixed}_{moving}.nii.gz``)
- ``boxplot``: ``--csv ... --dataset-json JSON [--merge-hemispheres] --out PREFIX``
- ``curves``: ``--summary RUN_DIR/summary.json ... --out PREFIX`` (each run's ``metrics.csv`` beside it)

``--summary`` takes run records (``summary.json``): they give the parameter counts of ``scaling`` and the
full training-set size of ``trainsize``; no model is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from dirbench.run_record import RunRecord

NAME = "figure"
HELP = "draw a figure: scaling | trainsize | qualitative | boxplot | curves (PREFIX.pdf and PREFIX.png)"
KINDS = ("scaling", "trainsize", "qualitative", "boxplot", "curves")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="which figure")
    p.add_argument("--out", required=True, type=Path, metavar="PREFIX", help="output path without extension")
    p.add_argument(
        "--csv", nargs="+", type=Path, metavar="CSV", help="evaluation CSVs (scaling/trainsize/boxplot)"
    )
    p.add_argument(
        "--reference",
        type=Path,
        metavar="CSV",
        help="evaluation CSV drawn as a dashed horizontal line (scaling/trainsize), e.g. TransMorph",
    )
    p.add_argument(
        "--summary",
        nargs="*",
        default=[],
        type=Path,
        metavar="JSON",
        help="run records, runs/{dataset}/{method}/{subset}/summary.json: parameter counts (scaling), the "
        "full training-set size (trainsize, when --full-size is not given), the runs to draw (curves)",
    )
    p.add_argument("--full-size", type=int, metavar="N", help="trainsize: images in the full training set")
    p.add_argument("--fixed", type=Path, help="qualitative: fixed image")
    p.add_argument("--moving", type=Path, help="qualitative: moving image")
    p.add_argument(
        "--disp", nargs="+", metavar="METHOD=PATH", help="qualitative: displacement of each method"
    )
    p.add_argument(
        "--axis", type=int, default=2, help="qualitative: axis cut across (default 2, axial for RAS)"
    )
    p.add_argument("--slice", type=int, help="qualitative: slice index (default: the middle)")
    p.add_argument("--pairs", metavar="DATASET_JSON:LIST", help="qualitative: take the pair from this list")
    p.add_argument("--index", type=int, default=0, help="qualitative: which pair of --pairs (default 0)")
    p.add_argument(
        "--dataset-json", type=Path, help="boxplot: dataset.json whose 'labels' name the structures"
    )
    p.add_argument(
        "--merge-hemispheres",
        action="store_true",
        help="boxplot: merge Left-X / Right-X into X (per-pair mean of the two sides)",
    )


def _need(args: argparse.Namespace, *names: str) -> None:
    from dirbench.errors import UserError

    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise UserError(f"figure {args.kind} needs {', '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    from dirbench import figures
    from dirbench.tables import read_eval_csvs, read_records

    if args.kind == "curves":
        from dirbench.curves import curves_figure, read_run_curve

        _need(args, "summary")
        fig = curves_figure([read_run_curve(s) for s in args.summary])
        for path in figures.save_figure(fig, args.out):
            print(f"wrote {path}")
        return 0
    records = read_records(args.summary)
    reference = read_eval_csvs([args.reference]) if args.reference else None
    if args.kind == "scaling":
        fig = _scaling(args, records, reference)
    elif args.kind == "trainsize":
        _need(args, "csv")
        full = args.full_size or _full_size(records)
        fig = figures.trainsize_figure(read_eval_csvs(args.csv), full, reference)
    elif args.kind == "qualitative":
        fig = _qualitative(args)
    else:
        _need(args, "csv", "dataset_json")
        from dirbench.dataset import Dataset

        names = {int(k): str(v) for k, v in Dataset.load(args.dataset_json).raw.get("labels", {}).items()}
        fig = figures.boxplot_figure(read_eval_csvs(args.csv), names, args.merge_hemispheres)
    for path in figures.save_figure(fig, args.out):
        print(f"wrote {path}")
    return 0


def _full_size(records: dict[str, RunRecord]) -> int | None:
    """The number of training images of the full-set run among the records (no subset), if recorded."""
    sizes = [r.result["train_images"] for r in records.values() if r.run.subset is None and "train_images" in r.result]
    return max(sizes) if sizes else None


def _scaling(args: argparse.Namespace, records: dict[str, RunRecord], reference: pd.DataFrame | None) -> Figure:
    from dirbench import figures
    from dirbench.tables import read_eval_csvs

    _need(args, "csv")
    df = read_eval_csvs(args.csv)
    params = {label: r.params.total for label, r in records.items()}
    return figures.scaling_figure(df, params, reference)


def _qualitative(args: argparse.Namespace) -> Figure:
    from dirbench import figures
    from dirbench.errors import UserError
    from dirbench.io import load_disp, load_image

    disp_name = None
    if args.pairs:
        from dirbench.dataset import parse_pair_spec

        dataset, name = parse_pair_spec(args.pairs)
        pairs = dataset.pairs(name)
        if not 0 <= args.index < len(pairs):
            raise UserError(f"--index {args.index}: {args.pairs} has {len(pairs)} pairs")
        pair = pairs[args.index]
        args.fixed, args.moving, disp_name = pair.fixed.image, pair.moving.image, pair.disp_name
    _need(args, "fixed", "moving", "disp")
    disps = {}
    for spec in args.disp:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise UserError(f"--disp {spec!r}: expected METHOD=PATH, e.g. dp-conv-mf=disp_0438_0439.nii.gz")
        disps[label] = load_disp(Path(path) / disp_name if disp_name and Path(path).is_dir() else path)
    return figures.qualitative_figure(
        load_image(args.fixed), load_image(args.moving), disps, args.axis, args.slice
    )
