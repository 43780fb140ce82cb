"""The paper's figures as pure functions of the tidy evaluation CSVs and the registration outputs.

Liu, Ruan & Sheng (MIDL 2025): Figure B2 left (:func:`scaling_figure`: parameter count vs test Dice for
the VoxelMorph and DP-Conv-MF size families, TransMorph as a dashed reference line), Figure B2 right
(:func:`trainsize_figure`: training-set size vs Dice, log x), Figure B3 (:func:`qualitative_figure`:
one test case, warped images and Jacobian-determinant maps with the non-positive regions contoured in
black), plus the per-structure Dice boxplots researchers expect (:func:`boxplot_figure`, after
TransMorph's ``IXI/analysis.py``: left/right structures merged, one colour per method).

Error bars and ranges are ± one SD over the evaluated pairs (``np.std``, ``ddof=0``), as the tables.
Every figure is a ``matplotlib.figure.Figure`` (no pyplot state); :func:`save_figure` writes a vector
PDF (TrueType fonts, ``pdf.fonttype`` 42, so text stays editable) and a 200-dpi PNG, atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from dirbench.errors import UserError
from dirbench.io import atomic_path
from dirbench.names import DISPLAY_NAMES, display_name, family
from dirbench.run_record import RunId
from dirbench.tables import case_values

__all__ = [
    "MAX_WIDTH_IN",
    "PNG_DPI",
    "boxplot_figure",
    "jacobian_slice",
    "paper_style",
    "qualitative_figure",
    "save_figure",
    "scaling_figure",
    "structure_dice",
    "trainsize_figure",
]

PNG_DPI = 200
#: Widest figure in inches: 2,400 px in the PNG, which a page's text width holds when scaled.
MAX_WIDTH_IN = 12.0
_RC = {"pdf.fonttype": 42, "ps.fonttype": 42}


@contextmanager
def paper_style() -> Iterator[None]:
    """Seaborn's white-grid style and paper context, locally (the global rcParams are left alone)."""
    with mpl.rc_context(_RC), sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
        yield


def save_figure(fig: Figure, prefix: str | Path) -> list[Path]:
    """Write ``PREFIX.pdf`` (vector, TrueType fonts) and ``PREFIX.png`` (200 dpi), each atomically."""
    paths = []
    with mpl.rc_context(_RC):
        for ext, kwargs in ((".pdf", {}), (".png", {"dpi": PNG_DPI})):
            path = Path(f"{prefix}{ext}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=ext[1:], **kwargs)
            paths.append(path)
    return paths


def _dice_stats(df: pd.DataFrame, label: str) -> tuple[float, float, int]:
    """Mean, SD (ddof=0) and number of the case-level Dice values of one method label."""
    values = case_values(df, label, "dice").to_numpy()
    if values.size == 0:
        raise UserError(f"method {label}: no case-level dice rows in the evaluation CSVs")
    return float(np.mean(values)), float(np.std(values, ddof=0)), int(values.size)


def _reference_line(ax: mpl.axes.Axes, reference: pd.DataFrame | None) -> None:
    """Dashed horizontal line at the mean Dice of every method in ``reference`` (e.g. TransMorph)."""
    if reference is None:
        return
    for label in dict.fromkeys(reference["method"]):
        mean, _, _ = _dice_stats(reference, label)
        ax.axhline(
            mean, color="0.35", linestyle="--", linewidth=1.2, label=f"{display_name(label)} ({mean:.4f})"
        )


def scaling_figure(
    df: pd.DataFrame, params: Mapping[str, float], reference: pd.DataFrame | None = None
) -> Figure:
    """Figure B2 (left): parameters (millions, log x) vs mean test Dice ± SD, one line per model family.

    Args:
        df: evaluation rows (:func:`dirbench.tables.read_eval_csvs`) of the size variants, e.g.
            ``voxelmorph-s/m/l`` and ``dp-conv-mf-small/medium/large``.
        params: method label → trainable parameters (count, not millions).
        reference: evaluation rows drawn as a dashed horizontal line (TransMorph in the paper).
    """
    points = []
    for label in dict.fromkeys(df["method"]):
        if label not in params:
            raise UserError(
                f"method {label}: parameter count unknown (pass its run's summary.json with --summary)"
            )
        mean, sd, _ = _dice_stats(df, label)
        points.append((family(label), params[label] / 1e6, mean, sd, label))
    with paper_style():
        fig = Figure(figsize=(5.2, 3.8), layout="constrained")
        ax = fig.add_subplot()
        for fam in dict.fromkeys(p[0] for p in points):
            pts = sorted(p for p in points if p[0] == fam)
            x, y, e = (np.array([p[i] for p in pts]) for i in (1, 2, 3))
            bars = ax.errorbar(
                x, y, yerr=e, marker="o", capsize=3, linewidth=1.5, label=DISPLAY_NAMES.get(fam, fam)
            )
            for px, py, label in zip(x, y, (p[4] for p in pts), strict=True):
                size = RunId.from_label(label).method.removeprefix(fam).lstrip("-") or "default"
                ax.annotate(
                    size,
                    (px, py),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize="x-small",
                    color=bars.lines[0].get_color(),
                )
        _reference_line(ax, reference)
        ax.set_xscale("log")
        _plain_log_ticks(ax, [p[1] for p in points])
        ax.set_xlabel("Trainable parameters (M, log scale)")
        ax.set_ylabel("Test Dice (mean ± SD over pairs)")
        ax.legend(loc="best", frameon=True)
    return fig


def _plain_log_ticks(ax: mpl.axes.Axes, xs: list[float]) -> None:
    """Log-x ticks at 1-2-5 steps covering ``xs``, labelled as plain numbers (``0.5``, ``2``, ``10``)."""
    lo, hi = min(xs), max(xs)
    steps = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
    ]
    ticks = [t for t in steps if lo / 1.5 <= t <= hi * 1.5] or [lo, hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def trainsize_figure(
    df: pd.DataFrame, full_size: int | None = None, reference: pd.DataFrame | None = None
) -> Figure:
    """Figure B2 (right): training-set size (log x) vs mean Dice ± SD, one line per method.

    A label ``method@N`` was trained on N images; a bare ``method`` on the full set of ``full_size``.
    """
    lines: dict[str, list[tuple[int, float, float]]] = {}
    for label in dict.fromkeys(df["method"]):
        run = RunId.from_label(label)
        base, size = run.method, run.subset
        if size is None:
            if full_size is None:
                raise UserError(f"method {label} was trained on the full set: give its size (--full-size N)")
            size = full_size
        mean, sd, _ = _dice_stats(df, label)
        lines.setdefault(base, []).append((size, mean, sd))
    with paper_style():
        fig = Figure(figsize=(5.2, 3.8), layout="constrained")
        ax = fig.add_subplot()
        for base, pts in lines.items():
            x, y, e = (np.array(v) for v in zip(*sorted(pts), strict=True))
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, linewidth=1.5, label=display_name(base))
        _reference_line(ax, reference)
        ax.set_xscale("log")
        sizes = sorted({p[0] for pts in lines.values() for p in pts})
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{s:,}" for s in sizes], rotation=45 if len(sizes) > 6 else 0)
        ax.set_xlabel("Training-set size (images, log scale)")
        ax.set_ylabel("Dice (mean ± SD over pairs)")
        ax.legend(loc="best", frameon=True)
    return fig


def jacobian_slice(disp: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Jacobian determinant of x ↦ x + u(x) on one slice, ``[X, Y, Z, 3]`` → the 2-D slice (voxel units).

    Central differences in the interior, one-sided at the faces (:func:`methods.spatial.jacobian_det`
    on the slab of the slice and its neighbours, so the derivative across the slice is central too).
    """
    import torch

    from methods.spatial import jacobian_det

    n = disp.shape[axis]
    lo, hi = max(0, index - 1), min(n, index + 2)
    slab = np.take(disp, np.arange(lo, hi), axis=axis)
    field = torch.from_numpy(np.ascontiguousarray(np.moveaxis(slab, -1, 0)))[None].double()
    det = jacobian_det(field)[0].numpy()
    return np.take(det, index - lo, axis=axis).astype(np.float32)


def qualitative_figure(
    fixed: np.ndarray,
    moving: np.ndarray,
    disps: Mapping[str, np.ndarray],
    axis: int = 2,
    index: int | None = None,
) -> Figure:
    """Figure B3: one case. Row 1: fixed and moving; row 2: the moving image warped by each method;
    row 3: each method's Jacobian determinant (colour scale 0–2, 1 = volume preserved) with the
    non-positive regions (folds) contoured in black and their share of the slice in the title.

    Args:
        fixed, moving: ``[X, Y, Z]`` images on the same grid.
        disps: method label → ``[X, Y, Z, 3]`` voxel displacement (pull-back, fixed grid).
        axis: the axis cut across (2: axial for RAS data); ``index``: the slice, default the middle.
    """
    from dirbench.warp import warp_array

    if not disps:
        raise UserError("the qualitative figure needs at least one displacement (--disp METHOD=PATH)")
    if fixed.shape != moving.shape:
        raise UserError(f"fixed and moving image shapes differ: {fixed.shape} vs {moving.shape}")
    for label, disp in disps.items():
        if disp.shape[:3] != fixed.shape:
            raise UserError(
                f"--disp {label}: shape {disp.shape[:3]} does not match the fixed image {fixed.shape}"
            )
    if axis not in (0, 1, 2):
        raise UserError(f"--axis must be 0, 1 or 2, got {axis}")
    index = fixed.shape[axis] // 2 if index is None else index
    if not 0 <= index < fixed.shape[axis]:
        raise UserError(f"--slice {index} is outside 0..{fixed.shape[axis] - 1} along axis {axis}")

    def cut(volume: np.ndarray) -> np.ndarray:  # first in-plane axis horizontal, second vertical
        return np.take(volume, index, axis=axis).T

    vmin, vmax = np.percentile(fixed, [0.5, 99.5])
    gray = {"cmap": "gray", "vmin": vmin, "vmax": vmax, "origin": "lower", "interpolation": "nearest"}
    n = max(2, len(disps))
    with paper_style(), sns.axes_style("white"):
        fig = Figure(figsize=(2.1 * n + 0.8, 6.9), layout="constrained")
        axes = fig.subplots(3, n, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, title, img in ((axes[0, 0], "Fixed", fixed), (axes[0, 1], "Moving", moving)):
            ax.imshow(cut(img), **gray)
            ax.set_title(title)
        shown = None
        for j, (label, disp) in enumerate(disps.items()):
            axes[1, j].imshow(cut(warp_array(moving, disp, order=1)), **gray)
            axes[1, j].set_title(display_name(label), fontsize="small")
            jdet = jacobian_slice(disp, axis, index).T
            shown = axes[2, j].imshow(
                jdet, cmap="RdBu", vmin=0.0, vmax=2.0, origin="lower", interpolation="nearest"
            )
            if (jdet <= 0).any():
                axes[2, j].contour(jdet <= 0, levels=[0.5], colors="k", linewidths=0.8, origin="lower")
            axes[2, j].set_title(f"|J| ≤ 0: {100 * np.mean(jdet <= 0):.2f}% of slice", fontsize="small")
        fig.colorbar(shown, ax=axes[2, :].tolist(), shrink=0.8, label="Jacobian determinant")
    return fig


def structure_dice(
    df: pd.DataFrame, label_names: Mapping[int, str], merge_hemispheres: bool = False
) -> pd.DataFrame:
    """Per-structure Dice in long format: columns ``method`` (display name), ``structure``, ``dice``.

    Built from the per-label ``dice`` rows; ``label_names`` maps label ids to names (unknown ids are
    named ``label N``). With ``merge_hemispheres``, ``Left-X`` and ``Right-X`` become one structure ``X``
    whose per-pair value is the mean of the two sides (as TransMorph's ``IXI/analysis.py``). Structures
    keep the order of their smallest label id; NaN values (label absent from the pair) are dropped.
    """
    rows = df[(df["metric"] == "dice") & (df["label"] != "")].copy()
    if rows.empty:
        raise UserError("no per-label dice rows in the evaluation CSVs (the boxplot needs them)")
    try:
        ids = rows["label"].astype(int)
    except ValueError:
        raise UserError("a per-label row has a label that is not an integer id") from None

    def structure(i: int) -> str:
        name = label_names.get(i, f"label {i}")
        if merge_hemispheres:
            for side in ("Left-", "Right-"):
                name = name.removeprefix(side)
        return name

    order = list(dict.fromkeys(structure(i) for i in sorted(set(ids))))
    rows["structure"] = [structure(i) for i in ids]
    long = rows.groupby(["method", "fixed", "moving", "structure"], sort=False)["value"].mean().reset_index()
    long = long.rename(columns={"value": "dice"}).dropna(subset=["dice"])
    methods = list(dict.fromkeys(df["method"]))
    long["structure"] = pd.Categorical(long["structure"], categories=order, ordered=True)
    long["rank"] = long["method"].map({m: i for i, m in enumerate(methods)})
    long = long.sort_values(["rank", "structure"], kind="stable")
    long["method"] = long["method"].map(display_name)
    return long[["method", "fixed", "moving", "structure", "dice"]].reset_index(drop=True)


def boxplot_figure(
    df: pd.DataFrame, label_names: Mapping[int, str], merge_hemispheres: bool = False
) -> Figure:
    """Per-structure Dice boxplots, one colour per method (:func:`structure_dice` gives the data).

    The structures wrap onto as many rows as it takes to keep the figure at most :data:`MAX_WIDTH_IN` wide
    (2,400 px in the PNG; a page's text width when scaled), each structure a slot of the same width in
    every row, one legend above all rows.
    """
    from matplotlib.patches import Patch

    long = structure_dice(df, label_names, merge_hemispheres)
    structures = [s for s in long["structure"].cat.categories if (long["structure"] == s).any()]
    methods = list(dict.fromkeys(long["method"]))
    slot = 0.25 + 0.09 * len(methods)  # inches per structure
    per_row = max(1, int((MAX_WIDTH_IN - 0.9) // slot))
    n_rows = math.ceil(len(structures) / per_row)
    per_row = math.ceil(len(structures) / n_rows)  # balance the rows
    width = min(MAX_WIDTH_IN, max(6.0, 0.9 + per_row * slot))
    colours = sns.color_palette("colorblind" if len(methods) <= 10 else "husl", len(methods))  # 10 colour-blind safe
    palette = dict(zip(methods, colours, strict=True))
    low = max(0.0, math.floor(10 * long["dice"].min()) / 10)
    with paper_style():
        fig = Figure(figsize=(width, 0.5 + 3.1 * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, 1, squeeze=False)[:, 0]
        for row, ax in enumerate(axes):
            chunk = structures[row * per_row : (row + 1) * per_row]
            sns.boxplot(
                data=long[long["structure"].isin(chunk)],
                x="structure",
                y="dice",
                hue="method",
                order=chunk,
                hue_order=methods,
                palette=palette,
                ax=ax,
                fliersize=1.5,
                linewidth=0.7,
                legend=False,
            )
            ax.set_xlim(-0.5, per_row - 0.5)  # a short last row keeps the slot width
            ax.set_xlabel("")
            ax.set_ylabel("Dice")
            ax.set_ylim(low, 1.0)
            ax.tick_params(axis="x", rotation=45, labelsize="small")
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
                tick.set_rotation_mode("anchor")
        fig.legend(
            handles=[Patch(facecolor=palette[m], edgecolor="0.3", label=m) for m in methods],
            loc="outside upper center",
            ncols=min(len(methods), 6),
            frameon=False,
        )
    return fig
