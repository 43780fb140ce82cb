"""The paper's tables as pure functions of the tidy evaluation CSVs (Liu, Ruan & Sheng, MIDL 2025).

Inputs are the per-pair evaluation CSVs, columns ``method,dataset,fixed,moving,metric,label,value``:
case-level rows have an empty ``label`` (``dice`` = the case's nanmean over labels, ``hd95`` in mm, may be
``inf``, ``sdlogj`` raw, ``ndv`` and ``nondiff_voxels`` in %, ``tre`` in mm where landmarks exist);
per-label rows (``label`` = the integer id) exist for ``dice`` and ``hd95``.

Aggregation (``spec/evaluation-and-data.md`` §6): every metric is averaged over the cases that have it,
``np.mean`` of the case values (an ``inf`` HD95 makes the mean ``inf``, printed as ``inf``); SD is
``np.std`` with ``ddof=0`` over the same cases.

Tables:

- ``table1`` (OASIS, paper Table 1): Dice mean (SD) with 4 decimals, HD95 mean (SD) 2 decimals, SDlogJ
  ×100 mean (SD) 2 decimals, NDV (%) mean, Params (M): ``(encoder/decoder) total`` for the DP variants,
  the total for other networks, ``-`` for Initial and Greedy.
- ``table_b2`` (LUMIR, paper Table B2): Dice ± SD, HD95, TRE (mm), NDV (%), 4 decimals each; the TRE
  column only when some method has TRE.
- ``table_b3`` (paper Table B3): one method trained on training subsets (``method@N``), one row per
  size, the full set first as ``all data / N``; bold marks only (as the paper).
- the cost table: training time, throughput, memory and registration time per method.

NDV decimals in ``table1`` follow the paper's printing (1.27, 0.33, 0.065, 0.027, 0.0007): the value
rounded to 2 significant digits, printed with at least 2 and at most 4 decimals (:func:`format_ndv`).

Marks: bold is the best mean of a column (max Dice, min otherwise) among all rows but Initial;
underline is the rule of :mod:`dirbench.stats` (Holm-corrected paired Wilcoxon vs the best, α = 0.05).
Each table is written as a complete LaTeX document (``PREFIX.tex``, booktabs, compiles on its own), the
bare tabular for ``\\input`` (``PREFIX.table.tex``), a Markdown copy and a CSV copy with the plain numbers
and the marks.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dirbench.errors import UserError
from dirbench.io import atomic_path
from dirbench.names import display_name, split_method
from dirbench.stats import ALPHA, column_marks

__all__ = [
    "EVAL_COLUMNS",
    "Cell",
    "Column",
    "Row",
    "Table",
    "build_cost_table",
    "build_table",
    "case_values",
    "format_ndv",
    "format_params",
    "format_sig",
    "model_params",
    "parameter_count",
    "read_eval_csvs",
    "read_runtime",
    "read_summary",
    "render_latex",
    "render_markdown",
    "render_tabular",
    "rule_text",
    "table_frame",
    "write_table",
]

EVAL_COLUMNS = ["method", "dataset", "fixed", "moving", "metric", "label", "value"]
KINDS = ("table1", "table_b2", "table_b3")
#: Rows that take no part in the marks (the unregistered starting point).
_UNMARKED = frozenset({"initial"})
#: Methods without trainable parameters.
_NO_PARAMS = frozenset({"initial", "greedy"})


# ---------------------------------------------------------------------------------------------- inputs


def read_eval_csvs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read and check evaluation CSVs; returns them concatenated with ``value`` as float.

    ``fixed``, ``moving`` and ``label`` stay strings (ids such as ``0004`` keep their zeros; a case-level
    row has ``label == ""``). Raises UserError for a missing or malformed file, duplicate case rows for one
    (method, pair, metric), or CSVs of more than one dataset.
    """
    frames = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not a readable CSV: {err}") from None
        if list(df.columns) != EVAL_COLUMNS:
            raise UserError(f"{path}: expected columns {','.join(EVAL_COLUMNS)}, got {','.join(df.columns)}")
        if df.empty:
            raise UserError(f"{path}: no rows")
        try:
            df["value"] = df["value"].astype(np.float64)
        except ValueError as err:
            raise UserError(f"{path}: a 'value' is not a number: {err}") from None
        df["source"] = str(path)
        frames.append(df)
    if not frames:
        raise UserError("no evaluation CSVs given")
    df = pd.concat(frames, ignore_index=True)
    datasets = list(dict.fromkeys(df["dataset"]))
    if len(datasets) > 1:
        raise UserError(
            f"the evaluation CSVs mix datasets {', '.join(datasets)}; one table shows one dataset"
        )
    case = df[df["label"] == ""]
    dup = case[case.duplicated(["method", "fixed", "moving", "metric"], keep=False)]
    if not dup.empty:
        r = dup.iloc[0]
        sources = ", ".join(
            dict.fromkeys(
                dup[
                    (dup["method"] == r["method"])
                    & (dup["fixed"] == r["fixed"])
                    & (dup["moving"] == r["moving"])
                ]["source"]
            )
        )
        raise UserError(
            f"{sources}: duplicate {r['metric']} rows for method {r['method']}, "
            f"pair {r['fixed']}/{r['moving']}"
        )
    return df


def case_values(df: pd.DataFrame, method: str, metric: str) -> pd.Series:
    """The case-level values of one method and metric, indexed by ``(fixed, moving)`` (empty if none)."""
    rows = df[(df["method"] == method) & (df["metric"] == metric) & (df["label"] == "")]
    return pd.Series(rows["value"].to_numpy(), index=pd.MultiIndex.from_frame(rows[["fixed", "moving"]]))


def read_summary(path: str | Path) -> dict[str, Any]:
    """Read a training ``summary.json`` and add ``label``: the method label of its evaluation CSV.

    Runs live at ``runs/{dataset}/{method}/{subset}/summary.json``; a ``subset`` folder that is a number N
    gives the label ``{method}@N`` (a run on N training images), anything else (``all``) the bare method.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("method"), str):
        raise UserError(f"{path}: not a training summary (no 'method' string)")
    subset = path.parent.name
    summary["label"] = f"{summary['method']}@{int(subset)}" if subset.isdigit() else summary["method"]
    summary["path"] = str(path)
    return summary


def read_runtime(path: str | Path) -> tuple[str, pd.DataFrame]:
    """Read a registration ``runtime.csv``; returns (method label, rows with float columns).

    The label comes from the folder, ``disp/{dataset}/{method}/{subset}/runtime.csv``: ``{method}@N`` for a
    numeric subset, ``{method}`` for ``all``; without a subset folder the parent folder is the method.
    """
    from dirbench.inference import RUNTIME_COLUMNS

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype={"fixed": str, "moving": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV: {err}") from None
    if list(df.columns) != RUNTIME_COLUMNS:
        raise UserError(f"{path}: expected columns {','.join(RUNTIME_COLUMNS)}, got {','.join(df.columns)}")
    for col in RUNTIME_COLUMNS[2:]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if df.empty or df["seconds"].isna().any():
        raise UserError(f"{path}: no rows, or a 'seconds' value that is not a number")
    subset = path.parent.name
    if subset == "all":
        label = path.parent.parent.name
    elif subset.isdigit():
        label = f"{path.parent.parent.name}@{int(subset)}"
    else:
        label = subset
    return label, df


@functools.cache
def model_params(name: str) -> tuple[int, int | None] | None:
    """(trainable parameters, encoder parameters or None) of registry method ``name`` at its default size.

    The encoder is the model's ``encoder`` submodule when it has one (the DP variants' shared residual
    U-Net encoder, 507,504 parameters). None when ``name`` is not a registered method. Cached: building
    TransMorph takes seconds.
    """
    import torch

    import methods

    if name not in methods.available():
        return None
    model = methods.build(name)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    enc = getattr(model, "encoder", None)
    encoder = (
        sum(p.numel() for p in enc.parameters() if p.requires_grad)
        if isinstance(enc, torch.nn.Module)
        else None
    )
    return total, encoder


# ---------------------------------------------------------------------------------------------- formats


def format_number(x: float, decimals: int) -> str:
    """``x`` with fixed decimals; ``inf`` / ``-inf`` / ``nan`` spelled out."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{decimals}f}"


def format_ndv(x: float) -> str:
    """NDV (%) as the paper prints it: 2 significant digits, at least 2 and at most 4 decimals.

    1.2712 → ``1.27``, 0.3349 → ``0.33``, 0.06512 → ``0.065``, 0.02712 → ``0.027``, 0.00071 → ``0.0007``,
    0 → ``0``.
    """
    if not math.isfinite(x):
        return format_number(x, 0)
    if x == 0:
        return "0"
    rounded = float(f"{x:.2g}")
    decimals = min(4, max(2, 1 - math.floor(math.log10(abs(rounded)))))
    return f"{x:.{decimals}f}"


def format_params(total: int, encoder: int | None = None) -> str:
    """Parameters in millions with 2 decimals; with ``encoder``, the paper's ``(encoder/decoder) total``.

    ``format_params(2_854_079, 507_504)`` → ``"(0.51/2.35) 2.85"``.
    """
    if encoder is None:
        return f"{total / 1e6:.2f}"
    return f"({encoder / 1e6:.2f}/{(total - encoder) / 1e6:.2f}) {total / 1e6:.2f}"


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Column:
    """One metric column: how its mean (and SD) is printed and which direction is better."""

    key: str  # CSV prefix; also the metric name in the evaluation CSVs
    header: str  # Markdown / plain header
    latex: str  # LaTeX header
    higher_is_better: bool
    decimals: int | None  # None: the NDV rule of format_ndv
    scale: float = 1.0  # printed value = scale × the CSV value (SDlogJ ×100)
    sd: str = ""  # "" mean only, "paren" → "m (s)", "pm" → "m ± s"
    dash_for_initial: bool = False  # meaningless for the zero field (SDlogJ, NDV)


@dataclass
class Cell:
    """A printed cell, its mark (``"best"``, ``"close"`` or ``""``) and the plain numbers for the CSV copy."""

    text: str
    mark: str = ""
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    key: str  # the method label (or the cost table's method)
    label: str  # printed row name
    cells: list[Cell]
    extra: dict[str, Any] = field(default_factory=dict)  # CSV-only fields (n pairs, training size)


@dataclass
class Table:
    name: str
    caption: str
    row_header: str
    headers: list[tuple[str, str]]  # (plain, LaTeX) per cell column
    keys: list[str]  # CSV prefix per cell column
    rows: list[Row]


DICE_PAREN = Column("dice", "Dice ↑", r"Dice $\uparrow$", True, 4, sd="paren")
DICE_PM = Column("dice", "Dice ↑", r"Dice $\uparrow$", True, 4, sd="pm")
HD95_PAREN = Column("hd95", "HD95 ↓", r"HD95 $\downarrow$", False, 2, sd="paren")
HD95 = Column("hd95", "HD95 ↓", r"HD95 $\downarrow$", False, 4)
SDLOGJ = Column(
    "sdlogj", "SDlogJ (×100) ↓", r"SDlogJ ($\times$100) $\downarrow$", False, 2, 100.0, "paren", True
)
NDV_SIG = Column("ndv", "NDV (%) ↓", r"NDV (\%) $\downarrow$", False, None, dash_for_initial=True)
NDV = Column("ndv", "NDV (%) ↓", r"NDV (\%) $\downarrow$", False, 4, dash_for_initial=True)
TRE = Column("tre", "TRE (mm) ↓", r"TRE (mm) $\downarrow$", False, 4)

_COLUMNS = {
    "table1": [DICE_PAREN, HD95_PAREN, SDLOGJ, NDV_SIG],
    "table_b2": [DICE_PM, HD95, TRE, NDV],
    "table_b3": [DICE_PM, HD95, TRE, NDV],
}


def rule_text(alpha: float = ALPHA, underline: bool = True) -> str:
    """The caption sentence that states the marking rule."""
    if not underline:
        return "Bold: the best value of each column."
    return (
        "Bold: the best mean of each column (Initial excluded); underlined: not significantly different from "
        "it (two-sided paired Wilcoxon signed-rank test over the pairs both methods were evaluated on, "
        f"Holm-corrected across the methods compared in that column, α = {alpha:g})."
    )


def _metric_cell(col: Column, values: np.ndarray, dash: bool) -> Cell:
    """Mean (SD) cell of one column; ``-`` when the method has no such case values or ``dash``."""
    if dash or values.size == 0:
        return Cell("-", values={"mean": None, "sd": None, "n": int(values.size)})
    with np.errstate(invalid="ignore"):  # an inf HD95: mean inf, SD nan (printed as the mean alone)
        mean = float(np.mean(values)) * col.scale
        sd = float(np.std(values, ddof=0)) * col.scale
    fmt = (lambda x: format_number(x, col.decimals)) if col.decimals is not None else format_ndv
    text = fmt(mean)
    if col.sd and math.isfinite(mean) and math.isfinite(sd):
        text = f"{text} ({fmt(sd)})" if col.sd == "paren" else f"{text} ± {fmt(sd)}"
    return Cell(text, values={"mean": mean, "sd": sd, "n": int(values.size)})


def _mark_column(
    df: pd.DataFrame, rows: list[Row], j: int, col: Column, underline: bool, alpha: float
) -> None:
    """Set the marks of cell column ``j`` (see :func:`dirbench.stats.column_marks`)."""
    competing = [
        r for r in rows if split_method(r.key)[0] not in _UNMARKED and r.cells[j].values["mean"] is not None
    ]
    means = {r.key: r.cells[j].values["mean"] for r in competing}
    cases = {r.key: case_values(df, r.key, col.key) for r in competing}
    marks = column_marks(cases, means, col.higher_is_better, underline=underline, alpha=alpha)
    for r in competing:
        r.cells[j].mark = marks[r.key]
        r.cells[j].values["mark"] = marks[r.key]


def parameter_count(label: str, summaries: Mapping[str, dict[str, Any]]) -> tuple[int, int | None] | None:
    """(total, encoder or None) parameters of a method label; None for Initial / Greedy or when unknown.

    Registered methods are built at their default size (:func:`model_params`); others fall back to the
    ``params`` of their training summary (``summaries``: method label → :func:`read_summary` result).
    """
    base = split_method(label)[0]
    if base in _NO_PARAMS:
        return None
    counted = model_params(base)
    if counted is None:
        params = summaries.get(label, {}).get("params")
        counted = (params, None) if isinstance(params, int) else None
    return counted


def _params_cell(label: str, summaries: Mapping[str, dict[str, Any]]) -> Cell:
    """``(enc/dec) total`` for the DP variants, total (M) for other networks, ``-`` without parameters."""
    counted = parameter_count(label, summaries)
    if counted is None:
        return Cell("-", values={"total": None, "encoder": None})
    total, encoder = counted
    encoder = encoder if split_method(label)[0].startswith("dp-") else None
    return Cell(format_params(total, encoder), values={"total": total, "encoder": encoder})


def _size_label(label: str, summaries: dict[str, dict[str, Any]]) -> tuple[str, int | None]:
    """Row name of a training-set-size row: ``"1,000"`` or ``"all data / 3,384"`` (``"all data"`` when the
    full run's ``train_images`` is unknown)."""
    size = split_method(label)[1]
    if size is not None:
        return f"{size:,}", size
    full = summaries.get(label, {}).get("train_images")
    return (f"all data / {full:,}", full) if isinstance(full, int) else ("all data", None)


def build_table(
    kind: str,
    df: pd.DataFrame,
    summaries: Sequence[dict[str, Any]] = (),
    caption: str | None = None,
    alpha: float = ALPHA,
) -> Table:
    """Build ``table1``, ``table_b2`` or ``table_b3`` from evaluation rows (:func:`read_eval_csvs`).

    Rows follow the order in which the methods first appear (``table_b3``: the full set first, then
    decreasing training-set size). ``summaries`` (:func:`read_summary`) supply the parameter count of
    methods outside the registry and the full training-set size of ``table_b3``. ``caption`` replaces the
    default first sentence; the marking rule is always appended.
    """
    if kind not in KINDS:
        raise UserError(f"unknown table kind {kind!r}; choose one of {', '.join(KINDS)}")
    by_label = {s["label"]: s for s in summaries}
    labels = list(dict.fromkeys(df["method"]))
    try:
        bases = {label: split_method(label)[0] for label in labels}
    except ValueError as err:
        raise UserError(str(err)) from None
    case = df[df["label"] == ""]
    have = set(case["metric"])
    columns = [c for c in _COLUMNS[kind] if c.key != "tre" or "tre" in have]
    dataset = str(df["dataset"].iloc[0])
    n_pairs = case[["fixed", "moving"]].drop_duplicates().shape[0]  # LUMIR: 29 Dice + 9 TRE pairs = 38
    notes = (
        [] if len(columns) == len(_COLUMNS[kind]) else ["TRE is not shown: no method has landmark results."]
    )

    if kind == "table_b3":
        if len(set(bases.values())) != 1:
            got = ", ".join(sorted(set(bases.values())))
            raise UserError(f"table_b3 compares training-set sizes of one method; got {got}")
        labels.sort(key=lambda lb: -(split_method(lb)[1] or math.inf))
        row_header = "Training set size"
        default = (
            f"Registration results on {dataset} ({n_pairs} pairs) of {display_name(bases[labels[0]])} "
            "trained on training sets of varying size."
        )
    else:
        row_header = "Method"
        default = f"Registration results on {dataset} ({n_pairs} pairs)."
        if kind == "table1":
            default += " Parameters of the DP variants are given as (encoder/decoder) total."

    rows = []
    for label in labels:
        cells = [
            _metric_cell(
                col,
                case_values(df, label, col.key).to_numpy(),
                col.dash_for_initial and bases[label] == "initial",
            )
            for col in columns
        ]
        extra: dict[str, Any] = {}
        if kind == "table_b3":
            name, extra["train_images"] = _size_label(label, by_label)
        else:
            name = display_name(label)
        if kind == "table1":
            cells.append(_params_cell(label, by_label))
        rows.append(Row(label, name, cells, extra))
    for j, col in enumerate(columns):
        _mark_column(df, rows, j, col, underline=kind != "table_b3", alpha=alpha)

    headers = [(c.header, c.latex) for c in columns]
    keys = [c.key for c in columns]
    if kind == "table1":
        headers.append(("Params (M)", "Params (M)"))
        keys.append("params")
    text = " ".join([caption or default, *notes, rule_text(alpha, underline=kind != "table_b3")])
    return Table(kind, text, row_header, headers, keys, rows)


def build_cost_table(
    summaries: Sequence[dict[str, Any]],
    runtimes: Sequence[tuple[str, pd.DataFrame]],
    caption: str | None = None,
) -> Table:
    """Training and registration cost per method (no marks).

    Columns: parameters (M, from the summary), epochs, training wall time (h), compute (GPU-h on a CUDA
    device; CPU-h = hours × the run's threads on CPU), optimiser steps/s, peak training memory (GPU MiB
    on CUDA, peak RSS otherwise), mean registration time per pair (s), peak registration memory (GPU MiB
    when any pair used the GPU, peak RSS otherwise) and the number of registered pairs.
    """
    by_label = {s["label"]: s for s in summaries}
    reg = dict(runtimes)
    labels = list(dict.fromkeys([*by_label, *reg]))
    if not labels:
        raise UserError("the cost table needs at least one --summary or --runtime")
    rows = []
    for label in labels:
        s = by_label.get(label, {})
        r = reg.get(label)
        rows.append(Row(label, display_name(label), [*_train_cost_cells(s), *_reg_cost_cells(r)]))
    headers = [
        ("Params (M)", "Params (M)"),
        ("Epochs", "Epochs"),
        ("Training (h)", "Training (h)"),
        ("Compute", "Compute"),
        ("Steps/s", "Steps/s"),
        ("Train peak mem. (MiB)", "Train peak mem.\\ (MiB)"),
        ("Reg. time (s/pair)", "Reg.\\ time (s/pair)"),
        ("Reg. peak mem. (MiB)", "Reg.\\ peak mem.\\ (MiB)"),
        ("Pairs", "Pairs"),
    ]
    keys = ["params", "epochs", "train_h", "compute", "steps_per_s", "train_mem", "reg_s", "reg_mem", "pairs"]
    default = "Training and registration cost per method."
    return Table("cost", caption or default, "Method", headers, keys, rows)


def _num(x: Any) -> float | None:
    """A finite number from a summary field, else None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def format_sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits in fixed notation: 0.6 → ``0.600``, 61.23 → ``61.2``."""
    if x == 0 or not math.isfinite(x):
        return format_number(x, digits - 1)
    return f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"


def _cost_cell(value: float | None, text: str, **extra: Any) -> Cell:
    """A cost cell: ``text`` and the plain number (with ``extra`` CSV fields), or ``-`` when unknown."""
    if value is None:
        return Cell("-", values={"": None})
    return Cell(text, values={"": value, **extra})


def _train_cost_cells(s: dict[str, Any]) -> list[Cell]:
    params, epochs, secs, steps = (
        _num(s.get(k)) for k in ("params", "epochs", "train_time_s", "steps_per_s")
    )
    cuda = str(s.get("device", "")).startswith("cuda")
    hours = secs / 3600 if secs is not None else None
    device_h = None if hours is None else hours if cuda else hours * (_num(s.get("threads")) or 1.0)
    mem = _num(s.get("peak_gpu_mib" if cuda else "peak_rss_mib"))
    unit, kind = ("GPU", "GPU") if cuda else ("CPU", "RSS")
    return [
        _cost_cell(None if params is None else int(params), format_params(int(params or 0))),
        _cost_cell(None if epochs is None else int(epochs), f"{epochs or 0:.0f}"),
        _cost_cell(hours, f"{hours or 0:.2f}"),
        _cost_cell(device_h, f"{device_h or 0:.2f} {unit}-h", unit=unit),
        _cost_cell(steps, format_sig(steps or 0)),
        _cost_cell(mem, f"{mem or 0:.0f} ({kind})", kind=kind),
    ]


def _reg_cost_cells(r: pd.DataFrame | None) -> list[Cell]:
    if r is None:
        return [Cell("-", values={"": None}) for _ in range(3)]
    secs = float(r["seconds"].mean())
    gpu = r["peak_gpu_mib"].max()
    on_gpu = bool(np.isfinite(gpu) and gpu > 0)
    mem = _num(float(gpu if on_gpu else r["peak_rss_mib"].max()))
    kind = "GPU" if on_gpu else "RSS"
    return [
        _cost_cell(secs, format_sig(secs)),
        _cost_cell(mem, f"{mem or 0:.0f} ({kind})", kind=kind),
        _cost_cell(len(r), str(len(r))),
    ]


# ---------------------------------------------------------------------------------------------- output

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_TEXT = {"±": r"$\pm$", "×": r"$\times$", "α": r"$\alpha$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and spell ±, ×, α in math mode)."""
    return "".join(_LATEX_SPECIAL.get(ch, _LATEX_TEXT.get(ch, ch)) for ch in text)


def _latex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text)
    return {"best": f"\\textbf{{{text}}}", "close": f"\\underline{{{text}}}"}.get(cell.mark, text)


def render_tabular(table: Table) -> str:
    """The booktabs ``tabular`` alone (for ``\\input`` into a paper's own ``table`` environment)."""
    spec = "l" + "c" * len(table.headers)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    lines.append(" & ".join([latex_escape(table.row_header), *(h[1] for h in table.headers)]) + r" \\")
    lines.append("\\midrule")
    for row in table.rows:
        lines.append(" & ".join([latex_escape(row.label), *(_latex_cell(c) for c in row.cells)]) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_latex(table: Table) -> str:
    """A complete LaTeX document (article + booktabs) holding the table with its caption; landscape when
    the table has more than six columns."""
    geometry = "landscape,margin=1.5cm" if len(table.headers) > 6 else "margin=1.5cm"
    return (
        "\\documentclass{article}\n"
        f"\\usepackage[{geometry}]{{geometry}}\n"
        "\\usepackage{booktabs}\n"
        "\\begin{document}\n"
        "\\begin{table}[ht]\n"
        "\\centering\n"
        "\\small\n"
        f"\\caption{{{latex_escape(table.caption)}}}\n"
        f"\\label{{tab:{table.name}}}\n"
        f"{render_tabular(table)}"
        "\\end{table}\n"
        "\\end{document}\n"
    )


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    return {"best": f"**{text}**", "close": f"<u>{text}</u>"}.get(cell.mark, text)


def render_markdown(table: Table) -> str:
    """A pipe table under its caption; bold as ``**x**``, underline as ``<u>x</u>``."""
    head = [table.row_header, *(h[0] for h in table.headers)]
    lines = [table.caption, "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for row in table.rows:
        lines.append(
            "| " + " | ".join([row.label.replace("|", "\\|"), *(_md_cell(c) for c in row.cells)]) + " |"
        )
    return "\n".join(lines) + "\n"


def table_frame(table: Table) -> pd.DataFrame:
    """The CSV copy: one row per table row, plain numbers (``{key}_mean``, ``{key}_sd``, ``{key}_n``, …)
    and the marks (``{key}_mark``: ``best`` = bold, ``close`` = underline)."""
    records = []
    for row in table.rows:
        rec: dict[str, Any] = {"method": row.key, "row": row.label, **row.extra}
        for key, cell in zip(table.keys, row.cells, strict=True):
            for name, value in cell.values.items():
                rec[f"{key}_{name}" if name else key] = value
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    for col in frame.columns:  # counts stay integers where some rows have none
        present = [rec[col] for rec in records if rec.get(col) is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            frame[col] = frame[col].astype("Int64")
    return frame


def write_table(table: Table, prefix: str | Path) -> list[Path]:
    """Write ``PREFIX.tex`` (complete document), ``PREFIX.table.tex`` (tabular), ``PREFIX.md`` and
    ``PREFIX.csv``, each atomically; returns the paths."""
    outputs = {
        ".tex": render_latex(table),
        ".table.tex": render_tabular(table),
        ".md": render_markdown(table),
        ".csv": table_frame(table).to_csv(index=False),
    }
    paths = []
    for suffix, text in outputs.items():
        path = Path(f"{prefix}{suffix}")
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
