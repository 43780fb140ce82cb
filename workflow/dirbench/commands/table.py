"""``dirbench table``: the paper's result tables (Table 1, B2, B3) from evaluation CSVs."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "table"
HELP = "write a results table (PREFIX.tex, PREFIX.table.tex, PREFIX.md, PREFIX.csv) from evaluation CSVs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kind",
        required=True,
        choices=["table1", "table_b2", "table_b3"],
        help="table1: OASIS-style; table_b2: LUMIR-style; table_b3: training-set sizes of one method",
    )
    p.add_argument(
        "--csv",
        required=True,
        nargs="+",
        type=Path,
        metavar="CSV",
        help="evaluation CSVs; rows keep this order (table_b3: sorted by training-set size)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="PREFIX", help="output path without extension")
    p.add_argument(
        "--summary",
        nargs="*",
        default=[],
        type=Path,
        metavar="JSON",
        help="the run records (runs/{dataset}/{method}/{subset}/summary.json) of the trained methods: "
        "parameter counts, not-converged / collapsed footnotes, table_b3's full training-set size",
    )
    p.add_argument("--caption", help="caption text (the marking rule is appended)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the underline rule")


def run(args: argparse.Namespace) -> int:
    from dirbench.errors import UserError
    from dirbench.tables import build_table, read_eval_csvs, read_records, write_table

    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be in (0, 1), got {args.alpha}")
    df = read_eval_csvs(args.csv)
    table = build_table(args.kind, df, read_records(args.summary), args.caption, args.alpha)
    for path in write_table(table, args.out):
        print(f"wrote {path}")
    return 0
