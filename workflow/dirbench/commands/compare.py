"""``dirbench compare``: paired comparisons of methods on one metric, with Holm-corrected Wilcoxon tests.

For each ``A:B`` comparison, over the evaluation pairs both methods have: the mean of each, the mean and
median difference A − B, how many pairs A wins, ties and loses (by the metric's direction), and the two-sided
paired Wilcoxon signed-rank p-value, Holm-corrected over all the comparisons of the call
(:mod:`dirbench.stats`). ``A`` and ``B`` may be ``+``-joined groups (``dp-convic-mf+dp-convic-c``): a group's
value on a pair is its members' mean there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "compare"
HELP = "paired comparison of methods on one metric (mean difference, wins, Holm-corrected Wilcoxon p)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True, nargs="+", type=Path, metavar="CSV", help="evaluation CSVs (one dataset)")
    p.add_argument("--metric", required=True, help="a case-level metric of the CSVs, e.g. dice, hd95, sdlogj, ndv, epe")
    p.add_argument(
        "--pair", required=True, nargs="+", metavar="A:B",
        help="comparisons A versus B; A or B may join methods with '+' (their mean per pair)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from dirbench.errors import UserError
    from dirbench.metrics import get_metric
    from dirbench.stats import holm, paired_wilcoxon
    from dirbench.tables import case_values, read_eval_csvs

    df = read_eval_csvs(args.csv)
    try:
        higher_is_better = get_metric(args.metric).higher_is_better
    except (KeyError, ValueError) as err:
        raise UserError(f"--metric {args.metric}: {err}") from None

    def group(spec: str) -> pd.Series:
        members = [case_values(df, m, args.metric) for m in spec.split("+")]
        for name, values in zip(spec.split("+"), members, strict=True):
            if values.empty:
                raise UserError(f"--pair: no {args.metric} rows for method {name!r} in the CSVs")
        return pd.concat(members, axis=1).mean(axis=1)

    rows = []
    for spec in args.pair:
        a_name, sep, b_name = spec.partition(":")
        if not sep or not a_name or not b_name:
            raise UserError(f"--pair {spec!r}: expected A:B")
        a, b = group(a_name).align(group(b_name), join="inner")
        diff = a.to_numpy() - b.to_numpy()
        sign = 1 if higher_is_better else -1
        rows.append({
            "A": a_name, "B": b_name, "pairs": len(a), "mean A": a.mean(), "mean B": b.mean(),
            "mean A−B": float(np.mean(diff)), "median A−B": float(np.median(diff)),
            "A better": int((sign * diff > 0).sum()), "ties": int((diff == 0).sum()),
            "B better": int((sign * diff < 0).sum()), "p": paired_wilcoxon(a.to_numpy(), b.to_numpy()),
        })  # fmt: skip
    for row, p_holm in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p (Holm)"] = float(p_holm)
    direction = "higher" if higher_is_better else "lower"
    print(f"{args.metric} ({direction} is better); paired two-sided Wilcoxon, Holm over {len(rows)} comparison(s)")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))
    return 0
