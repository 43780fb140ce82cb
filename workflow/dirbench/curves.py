"""Learning curves: the training loss and the validation metric of each run against optimiser updates.

One panel per run (:func:`curves_figure`), read from the run folder's ``metrics.csv`` (one row per epoch,
written by the trainer) and its run record ``summary.json`` (:class:`dirbench.run_record.RunRecord`): the
epoch-mean training loss on the left axis, the validation value on a twin right axis (Dice, higher is
better, or ``1 − NCC²``, lower is better), the untrained model's validation value at 0 updates when the
record has it (``result["val_initial"]``), the best epoch (``result["best_epoch"]``, the weights in
``best.pt``) marked, and the record's verdict in the panel title: converged, not converged, not assessed,
or collapsed at epoch E. Issue 12 (convergence you can see) asks for it: a flat validation curve shows a
model that did not train.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dirbench.errors import UserError
from dirbench.figures import MAX_WIDTH_IN, paper_style
from dirbench.names import display_name
from dirbench.run_record import RunRecord
from dirbench.tables import read_csv_strings

__all__ = ["METRICS_CSV_COLUMNS", "curves_figure", "read_run_curve", "run_verdict"]

#: The ``metrics.csv`` columns the figure needs (the trainer writes more).
METRICS_CSV_COLUMNS = ("epoch", "updates", "loss", "val_metric", "val_value")
_VAL_LABELS = {"dice": "validation Dice ↑", "ncc": "validation 1 − NCC² ↓"}
_LOSS_COLOUR, _VAL_COLOUR, _BEST_COLOUR = "C0", "C1", "C3"


def read_run_curve(summary: str | Path) -> tuple[RunRecord, pd.DataFrame]:
    """A run's record and its ``metrics.csv`` (beside ``summary``), ``val_value`` NaN where not validated.

    UserError naming the file for a missing or malformed record or CSV, a CSV without the columns
    :data:`METRICS_CSV_COLUMNS`, or one without rows.
    """
    summary = Path(summary)
    record = RunRecord.read(summary)
    path = summary.with_name("metrics.csv")
    df = read_csv_strings(path)
    missing = [c for c in METRICS_CSV_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: no column(s) {', '.join(missing)} (expected {', '.join(METRICS_CSV_COLUMNS)})")
    if df.empty:
        raise UserError(f"{path}: no epochs recorded")
    try:
        for col in ("epoch", "updates", "loss"):
            df[col] = df[col].astype(np.float64)
        df["val_value"] = [float(v) if v != "" else math.nan for v in df["val_value"]]
    except ValueError as err:
        raise UserError(f"{path}: a value that is not a number: {err}") from None
    return record, df


def run_verdict(record: RunRecord) -> str:
    """The record's verdict on the run: ``collapsed at epoch E``, ``converged``, ``not converged`` or
    ``convergence not assessed``."""
    if record.collapsed:
        return f"collapsed at epoch {record.collapse.get('epoch', '?')}"
    return {True: "converged", False: "not converged"}.get(record.converged, "convergence not assessed")


def _val_metric(record: RunRecord, df: pd.DataFrame) -> str:
    named = [m for m in df["val_metric"] if m]
    return str(record.result.get("val_metric") or (named[0] if named else ""))


def curves_figure(runs: Sequence[tuple[RunRecord, pd.DataFrame]]) -> Figure:
    """One panel per run (in order), at most three per row, at most :data:`MAX_WIDTH_IN` wide.

    Args:
        runs: ``(record, metrics)`` pairs from :func:`read_run_curve`.
    """
    if not runs:
        raise UserError("the learning-curve figure needs at least one run (--summary RUN_DIR/summary.json)")
    ncols = min(3, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    with paper_style():
        fig = Figure(figsize=(MAX_WIDTH_IN / 3 * ncols, 0.5 + 3.0 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax in axes.flat[len(runs) :]:
            ax.set_axis_off()
        for ax, (record, df) in zip(axes.flat, runs, strict=False):
            _panel(ax, record, df)
        fig.legend(
            handles=[
                Line2D([], [], color=_LOSS_COLOUR, label="training loss (left axis)"),
                Line2D([], [], color=_VAL_COLOUR, marker="o", markersize=4, label="validation (right axis)"),
                Line2D([], [], color=_BEST_COLOUR, linestyle=":", marker="*", markersize=9, label="best epoch"),
            ],
            loc="outside upper center",
            ncols=3,
            frameon=False,
        )
    return fig


def _panel(ax: Axes, record: RunRecord, df: pd.DataFrame) -> None:
    """One run: loss and validation against updates, the best epoch, the verdict in the title."""
    few = len(df) <= 30  # markers while they do not clutter (a one-epoch run is a single point)
    ax.plot(df["updates"], df["loss"], color=_LOSS_COLOUR, linewidth=1.3, marker="o" if few else None, markersize=3)
    ax.set_xlabel("optimiser updates")
    ax.set_ylabel("training loss", color=_LOSS_COLOUR)
    metric = _val_metric(record, df)
    val = df[df["val_value"].notna()]
    xs, ys = val["updates"].tolist(), val["val_value"].tolist()
    initial = record.result.get("val_initial")
    if isinstance(initial, int | float) and math.isfinite(initial):
        xs, ys = [0.0, *xs], [float(initial), *ys]
    right = ax.twinx()
    right.grid(False)
    right.plot(xs, ys, color=_VAL_COLOUR, marker="o", markersize=3.5, linewidth=1.1)
    right.set_ylabel(_VAL_LABELS.get(metric, f"validation {metric}".strip()), color=_VAL_COLOUR)
    best = df[df["epoch"] == record.result.get("best_epoch", math.nan)]
    if not best.empty and best["val_value"].notna().any():
        x, y = float(best["updates"].iloc[0]), float(best["val_value"].iloc[0])
        right.axvline(x, color=_BEST_COLOUR, linestyle=":", linewidth=1.0)
        right.plot([x], [y], marker="*", markersize=10, color=_BEST_COLOUR, linestyle="none")
    verdict = run_verdict(record)
    problem = verdict != "converged"
    ax.set_title(f"{display_name(record.run.label)}\n{verdict}", fontsize="medium",
                 color="firebrick" if problem else "black")  # fmt: skip
