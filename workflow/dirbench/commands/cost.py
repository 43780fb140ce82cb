"""``dirbench cost-table``: training and registration cost per method."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "cost-table"
HELP = "write the cost table (training time, memory, registration time) from summary.json and runtime.csv"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--summary",
        nargs="*",
        default=[],
        type=Path,
        metavar="JSON",
        help="run records of the trained methods, runs/{dataset}/{method}/{subset}/summary.json",
    )
    p.add_argument(
        "--runtime",
        nargs="*",
        default=[],
        type=Path,
        metavar="CSV",
        help="registration costs, disp/{dataset}/{method}/{subset}/runtime.csv",
    )
    p.add_argument("--out", required=True, type=Path, metavar="PREFIX", help="output path without extension")
    p.add_argument("--caption", help="caption text")


def run(args: argparse.Namespace) -> int:
    from dirbench.tables import build_cost_table, read_records, read_runtime, write_table

    table = build_cost_table(read_records(args.summary), [read_runtime(r) for r in args.runtime], args.caption)
    for path in write_table(table, args.out):
        print(f"wrote {path}")
    return 0
