"""The paper's tables as pure functions of the tidy evaluation CSVs (Liu, Ruan & Sheng, MIDL 2025).

Inputs are the per-pair evaluation CSVs, columns ``method,dataset,fixed,moving,metric,label,value``:
case-level rows have an empty ``label`` (``dice`` = the case's nanmean over labels, ``hd95`` in mm, may be
``inf``, ``sdlogj`` raw, ``ndv`` and ``nondiff_voxels`` in %, ``tre`` in mm where landmarks exist, ``epe``
and ``ic_error`` in mm where the dataset has a ground-truth warp); per-label rows (``label`` = the integer
id) exist for ``dice`` and ``hd95``. The facts of each trained run (parameter counts, converged / collapsed)
come from its run record (``summary.json``, :class:`dirbench.run_record.RunRecord`); no model is built.

Aggregation (``spec/evaluation-and-data.md`` §6): every metric is averaged over the cases that have it,
``np.mean`` of the case values; SD is ``np.std`` with ``ddof=0`` over the same cases.

Infinite values: an HD95 is ``inf`` when a label vanished after warping, and the official evaluators'
mean over the cases is then ``inf`` too. Such a cell prints ``∞`` with a footnote that counts the infinite
cases and gives the mean (SD) over the finite ones; it is never bold or underlined and takes no part in
the column's comparisons.

Tables:

- ``table1`` (OASIS, paper Table 1): Dice mean (SD) with 4 decimals, HD95 (mm) mean (SD) 2 decimals,
  SDlogJ ×100 mean (SD) 2 decimals, NDV (%) mean; EPE (mm) and ICE (mm) mean (SD) 2 decimals when the
  CSVs have ``epe`` / ``ic_error`` rows; Params (M): ``(encoder/decoder) total`` for the DP variants, the
  total for other networks, ``-`` for Initial and Greedy, ``?`` for a run without a record.
- ``table_b2`` (LUMIR, paper Table B2): Dice ± SD, HD95, TRE (mm), NDV (%), 4 decimals each; the TRE
  column only when some method has TRE.
- ``table_b3`` (paper Table B3): one method trained on training subsets (``method@N``), one row per
  size, the full set first as ``all data / N``; bold marks only (as the paper).
- the cost table: training time, throughput, memory and registration time per method.

NDV decimals in ``table1`` follow the paper's printing (1.27, 0.33, 0.065, 0.027, 0.0007): the value
rounded to 2 significant digits, printed with at least 2 and at most 4 decimals (:func:`format_ndv`).

Marks: bold is the best mean of a column (max Dice, min otherwise) among all rows but Initial;
underline is the rule of :mod:`dirbench.stats` (Holm-corrected paired Wilcoxon vs the best, α = 0.05),
applied only with enough pairs for that test to reach α (:func:`dirbench.stats.min_pairs`, stated in the
caption). Row labels carry a footnote symbol for runs whose record says they did not converge (†), have
collapsed (‡) or could not be assessed (§).
Each table is written as a complete LaTeX document (``PREFIX.tex``, booktabs, compiles on its own), the
bare tabular for ``\\input`` (``PREFIX.table.tex``), a Markdown copy and a CSV copy with the plain numbers
and the marks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dirbench.errors import UserError
from dirbench.evaluation import CSV_COLUMNS
from dirbench.io import atomic_path
from dirbench.metrics import get_metric
from dirbench.names import display_name
from dirbench.run_record import RunId, RunRecord
from dirbench.stats import ALPHA, ColumnMarks, column_marks

__all__ = [
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
    "plural",
    "read_csv_strings",
    "read_eval_csvs",
    "read_records",
    "read_runtime",
    "render_latex",
    "render_markdown",
    "render_tabular",
    "rule_text",
    "table_frame",
    "write_table",
]

#: Rows that take no part in the marks (the unregistered starting point).
_UNMARKED = frozenset({"initial"})
#: Methods without a training run (and without trainable parameters).
_UNTRAINED = frozenset({"initial", "greedy"})
#: Footnote symbols of a run's state, after the row label.
NOT_CONVERGED, COLLAPSED, NOT_ASSESSED = "†", "‡", "§"


# ---------------------------------------------------------------------------------------------- inputs


def read_csv_strings(path: Path) -> pd.DataFrame:
    """A CSV with every cell as a string (empty cells ``""``, never NaN); UserError naming ``path`` when it is
    missing or unreadable."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV: {err}") from None


def read_eval_csvs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read and check evaluation CSVs; returns them concatenated with ``value`` as float.

    ``fixed``, ``moving`` and ``label`` stay strings (ids such as ``0004`` keep their zeros; a case-level
    row has ``label == ""``). Raises UserError for a missing or malformed file, duplicate case rows for one
    (method, pair, metric), a method label with a bad ``@N``, or CSVs of more than one dataset.
    """
    frames = []
    for path in map(Path, paths):
        df = read_csv_strings(path)
        if list(df.columns) != list(CSV_COLUMNS):
            raise UserError(f"{path}: expected columns {','.join(CSV_COLUMNS)}, got {','.join(df.columns)}")
        if df.empty:
            raise UserError(f"{path}: no rows")
        try:
            df["value"] = df["value"].astype(np.float64)
        except ValueError as err:
            raise UserError(f"{path}: a 'value' is not a number: {err}") from None
        for label in dict.fromkeys(df["method"]):
            try:
                RunId.from_label(label)
            except ValueError as err:
                raise UserError(f"{path}: {err}") from None
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


def read_records(paths: Iterable[str | Path]) -> dict[str, RunRecord]:
    """Read run records (``summary.json``), keyed by their method label (``method`` or ``method@N``).

    UserError for a file that is not a complete run record, or for two records of one label.
    """
    records: dict[str, RunRecord] = {}
    where: dict[str, Path] = {}
    for path in map(Path, paths):
        record = RunRecord.read(path)
        label = record.run.label
        if label in records:
            raise UserError(f"{where[label]} and {path}: two run records for method {label}")
        records[label], where[label] = record, path
    return records


def read_runtime(path: str | Path) -> tuple[str, pd.DataFrame]:
    """Read a registration ``runtime.csv``; returns (method label, rows with float columns).

    The label comes from the folder, ``disp/{dataset}/{method}/{subset}/runtime.csv``
    (:meth:`RunId.from_tokens`: ``{method}@N`` for a numeric subset, ``{method}`` for ``all``); without a
    subset folder the parent folder is the method.
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
    try:
        label = RunId.from_tokens(path.parent.parent.parent.name, path.parent.parent.name, path.parent.name).label
    except ValueError:
        label = path.parent.name
    return label, df


# ---------------------------------------------------------------------------------------------- formats


def plural(n: int, noun: str) -> str:
    """``"1 pair"``, ``"38 pairs"``, ``"1,000 images"``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


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
    """One metric column: how its mean (and SD) is printed. The unit and the direction of improvement are
    the metric's own (:func:`dirbench.metrics.get_metric`)."""

    key: str  # CSV prefix; also the metric name in the evaluation CSVs and the metric registry
    name: str  # as printed in headers and notes
    decimals: int | None  # None: the NDV rule of format_ndv
    scale: float = 1.0  # printed value = scale × the CSV value (SDlogJ ×100, printed as the unit "×100")
    sd: str = ""  # "" mean only, "paren" → "m (s)", "pm" → "m ± s"
    dash_for_initial: bool = False  # meaningless for the zero field (SDlogJ, NDV)
    optional: bool = False  # shown only when some method has such rows
    inf_reason: str = ""  # why a case value can be infinite, for the footnote

    @property
    def higher_is_better(self) -> bool:
        return get_metric(self.key).higher_is_better

    @property
    def unit(self) -> str:
        return f"×{self.scale:g}" if self.scale != 1 else get_metric(self.key).unit

    def format(self, x: float) -> str:
        """A printed value: ``decimals`` fixed decimals, or the NDV rule (:func:`format_ndv`)."""
        return format_number(x, self.decimals) if self.decimals is not None else format_ndv(x)

    @property
    def header(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.name}{unit} {'↑' if self.higher_is_better else '↓'}"

    @property
    def latex(self) -> str:
        unit = f" ({latex_escape(self.unit)})" if self.unit else ""
        arrow = r"$\uparrow$" if self.higher_is_better else r"$\downarrow$"
        return f"{latex_escape(self.name)}{unit} {arrow}"


@dataclass
class Cell:
    """A printed cell, its mark (``"best"``, ``"close"`` or ``""``), a footnote symbol, and the plain numbers
    for the CSV copy."""

    text: str
    mark: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Row:
    key: str  # the method label (or the cost table's method)
    label: str  # printed row name
    cells: list[Cell]
    extra: dict[str, Any] = field(default_factory=dict)  # CSV-only fields (n pairs, training size, run state)
    note: str = ""  # footnote symbol(s) after the row name


@dataclass
class Table:
    name: str
    caption: str
    row_header: str
    headers: list[tuple[str, str]]  # (plain, LaTeX) per cell column
    keys: list[str]  # CSV prefix per cell column
    rows: list[Row]
    notes: list[tuple[str, str]] = field(default_factory=list)  # (symbol, text) printed under the table


DICE_PAREN = Column("dice", "Dice", 4, sd="paren")
DICE_PM = Column("dice", "Dice", 4, sd="pm")
_HD95_INF = "a label vanished after warping"
HD95_PAREN = Column("hd95", "HD95", 2, sd="paren", inf_reason=_HD95_INF)
HD95 = Column("hd95", "HD95", 4, inf_reason=_HD95_INF)
SDLOGJ = Column("sdlogj", "SDlogJ", 2, 100.0, "paren", True)
NDV_SIG = Column("ndv", "NDV", None, dash_for_initial=True)
NDV = Column("ndv", "NDV", 4, dash_for_initial=True)
TRE = Column("tre", "TRE", 4, optional=True)
EPE = Column("epe", "EPE", 2, sd="paren", optional=True)
ICE = Column("ic_error", "ICE", 2, sd="paren", optional=True)

#: The table kinds and their metric columns (a new table: an entry here and an artefact in the config).
_COLUMNS = {
    "table1": [DICE_PAREN, HD95_PAREN, SDLOGJ, NDV_SIG, EPE, ICE],
    "table_b2": [DICE_PM, HD95, TRE, NDV],
    "table_b3": [DICE_PM, HD95, TRE, NDV],
}
KINDS = tuple(_COLUMNS)


def rule_text(alpha: float = ALPHA, underline: bool = True) -> str:
    """The caption sentence that states the marking rule."""
    if not underline:
        return "Bold: the best value of each column."
    return (
        "Bold: the best mean of each column (Initial excluded); underlined: not significantly different from "
        "it (two-sided paired Wilcoxon signed-rank test over the pairs both methods were evaluated on, "
        f"Holm-corrected across the methods compared in that column, α = {alpha:g})."
    )


def _threshold_text(columns: Sequence[Column], tests: Sequence[ColumnMarks], alpha: float) -> str:
    """The caption sentences that state how many pairs the underline rule needs (:func:`dirbench.stats.min_pairs`,
    which depends on the number of comparisons in a column), and where too few pairs left nothing underlined."""
    groups: dict[int, tuple[list[str], set[int]]] = {}
    short: dict[int, list[str]] = {}
    for col, test in zip(columns, tests, strict=True):
        if test.comparisons:
            names, ms = groups.setdefault(test.needed, ([], set()))
            names.append(col.name)
            ms.add(test.comparisons)
            if not test.underlined:
                short.setdefault(test.pairs or 0, []).append(col.name)
    if not groups:
        return ""

    def comparisons(ms: set[int]) -> str:
        return plural(min(ms), "comparison") if len(ms) == 1 else f"{min(ms)} to {max(ms)} comparisons"

    if len(groups) == 1:
        ((needed, (_, ms)),) = groups.items()
        text = f"With {comparisons(ms)} per column, that test cannot reach α = {alpha:g} with fewer than {needed} "
        text += "pairs."
    else:
        parts = [f"{n} in {', '.join(names)} ({comparisons(ms)})" for n, (names, ms) in sorted(groups.items())]
        text = f"That test cannot reach α = {alpha:g} with fewer pairs than {'; '.join(parts)}."
    tested = sum(len(names) for names, _ in groups.values())
    for n, names in short.items():
        where = "" if len(names) == tested else f" in {', '.join(names)}"
        text += f" With {plural(n, 'pair')}, nothing is underlined{where}."
    return text


def _metric_cell(col: Column, values: np.ndarray, dash: bool) -> Cell:
    """Mean (SD) cell of one column; ``-`` when the method has no such case values or ``dash``.

    Infinite case values make the mean ``∞`` (as the official evaluators' mean); the cell then also keeps
    the number of infinite cases and the mean (SD) over the finite ones for the footnote and the CSV.
    """
    if dash or values.size == 0:
        return Cell("-", values={"mean": None, "sd": None, "n": int(values.size)})
    infinite = np.isinf(values)
    with np.errstate(invalid="ignore"):
        mean = float(np.mean(values)) * col.scale
        sd = float(np.std(values, ddof=0)) * col.scale
    if not infinite.any():
        text = col.format(mean)
        if col.sd and math.isfinite(mean) and math.isfinite(sd):
            text = f"{text} ({col.format(sd)})" if col.sd == "paren" else f"{text} ± {col.format(sd)}"
        return Cell(text, values={"mean": mean, "sd": sd, "n": int(values.size)})
    finite = values[~infinite]
    finite_mean = float(np.mean(finite)) * col.scale if finite.size else None
    finite_sd = float(np.std(finite, ddof=0)) * col.scale if finite.size else None
    return Cell(
        {math.inf: "∞", -math.inf: "-∞"}.get(mean, "nan"),
        values={"mean": mean, "sd": None, "n": int(values.size), "n_inf": int(infinite.sum()),
                "finite_mean": finite_mean, "finite_sd": finite_sd},
    )  # fmt: skip


def _inf_note(col: Column, row: Row, cell: Cell) -> str:
    """The footnote of an infinite cell: how many cases are infinite, why, and the finite cases' mean (SD)."""
    v = cell.values
    n, k = v["n"], v["n_inf"]
    why = f" ({col.inf_reason})" if col.inf_reason else ""
    text = (
        f"{row.label}: {col.name} is infinite for {k} of {plural(n, 'pair')}{why}, so its mean is infinite, as "
        "in the official evaluators"
    )
    if v["finite_mean"] is None:
        return text + "."
    mean, sd = col.format(v["finite_mean"]), col.format(v["finite_sd"])
    return text + f"; over the other {plural(n - k, 'pair')} it is {mean} ({sd})."


def _mark_column(
    df: pd.DataFrame, rows: list[Row], j: int, col: Column, underline: bool, alpha: float
) -> ColumnMarks:
    """Set the marks of cell column ``j`` (see :func:`dirbench.stats.column_marks`)."""
    competing = [
        r
        for r in rows
        if RunId.from_label(r.key).method not in _UNMARKED and r.cells[j].values["mean"] is not None
    ]
    means = {r.key: r.cells[j].values["mean"] for r in competing}
    cases = {r.key: case_values(df, r.key, col.key) for r in competing}
    result = column_marks(cases, means, col.higher_is_better, underline=underline, alpha=alpha)
    for r in competing:
        r.cells[j].mark = result.marks[r.key]
        r.cells[j].values["mark"] = result.marks[r.key]
    return result


def _params_cell(label: str, record: RunRecord | None) -> Cell:
    """``(enc/dec) total`` for the DP variants, total (M) for other networks (from the run record), ``-`` for
    Initial / Greedy, ``?`` for a trained method without a record."""
    method = RunId.from_label(label).method
    if method in _UNTRAINED:
        return Cell("-", values={"total": None, "encoder": None})
    if record is None:
        return Cell("?", values={"total": None, "encoder": None})
    total, encoder = record.params.total, record.params.encoder
    encoder = encoder if method.startswith("dp-") else None
    return Cell(format_params(total, encoder), values={"total": total, "encoder": encoder})


def _run_state(record: RunRecord | None) -> tuple[str, dict[str, Any]]:
    """The footnote symbol of a run's state and its CSV fields (``converged``, ``collapsed``)."""
    if record is None:
        return "", {}
    fields = {"converged": record.converged, "collapsed": record.collapsed}
    if record.collapsed:
        return COLLAPSED, fields
    return {False: NOT_CONVERGED, None: NOT_ASSESSED}.get(record.converged, ""), fields


def _run_notes(rows: Sequence[Row], records: Mapping[str, RunRecord]) -> list[tuple[str, str]]:
    """Footnotes for the run-state symbols in use, and a note naming trained rows without a record."""
    notes = []
    collapsed = [r for r in rows if r.note == COLLAPSED]
    if collapsed:
        which = "; ".join(
            f"{r.label} at epoch {records[r.key].collapse.get('epoch')}: {records[r.key].collapse.get('reason')}"
            for r in collapsed
        )
        notes.append((COLLAPSED, f"Collapsed: the collapse guard stopped the training ({which}); these numbers "
                                 "are those of a degenerate model."))  # fmt: skip
    unconverged = [r for r in rows if r.note == NOT_CONVERGED]
    if unconverged:
        tols = sorted({records[r.key].train.converge_tol for r in unconverged})
        notes.append((NOT_CONVERGED, "Not converged: the best validation value (Dice, or 1 − NCC²) still "
                      f"improved by {' / '.join(f'{t:g}' for t in tols)} or more over the last quarter of the "
                      "validations; longer training may change these numbers."))  # fmt: skip
    if any(r.note == NOT_ASSESSED for r in rows):
        notes.append((NOT_ASSESSED, "Convergence not assessed: too few validations in the run."))
    missing = [r.label for r in rows if RunId.from_label(r.key).method not in _UNTRAINED and r.key not in records]
    if missing:
        notes.append(("", f"No run record (summary.json) was given for {', '.join(missing)}: their convergence"
                          " and parameter counts are unknown."))  # fmt: skip
    return notes


def _size_label(label: str, record: RunRecord | None) -> tuple[str, int | None]:
    """Row name of a training-set-size row: ``"1,000"`` or ``"all data / 3,384"`` (``"all data"`` when the
    full run's number of training images is not in its record)."""
    size = RunId.from_label(label).subset
    if size is not None:
        return f"{size:,}", size
    full = record.result.get("train_images") if record is not None else None
    return (f"all data / {full:,}", full) if isinstance(full, int) else ("all data", None)


def build_table(
    kind: str,
    df: pd.DataFrame,
    records: Mapping[str, RunRecord] | None = None,
    caption: str | None = None,
    alpha: float = ALPHA,
    note: str | None = None,
) -> Table:
    """Build a table of kind :data:`KINDS` (``table1``, ``table_b2``, ``table_b3``) from evaluation rows
    (:func:`read_eval_csvs`).

    Rows follow the order in which the methods first appear (``table_b3``: the full set first, then
    decreasing training-set size). ``records`` (:func:`read_records`: method label → run record) give the
    parameter counts, the converged / collapsed footnotes and the full training-set size of ``table_b3``.
    ``caption`` replaces the default first sentence; ``note`` (how the numbers were made, e.g. "Demo data,
    not the paper's protocol.") follows it; the marking rule is always appended.
    """
    if kind not in KINDS:
        raise UserError(f"unknown table kind {kind!r}; choose one of {', '.join(KINDS)}")
    records = records or {}
    labels = list(dict.fromkeys(df["method"]))
    runs = {label: RunId.from_label(label) for label in labels}
    case = df[df["label"] == ""]
    have = set(case["metric"])
    columns = [c for c in _COLUMNS[kind] if not c.optional or c.key in have]
    dataset = str(df["dataset"].iloc[0])
    n_pairs = case[["fixed", "moving"]].drop_duplicates().shape[0]  # LUMIR: 29 Dice + 9 TRE pairs = 38
    notes = (
        ["TRE is not shown: no method has landmark results."]
        if TRE in _COLUMNS[kind] and TRE not in columns
        else []
    )

    if kind == "table_b3":
        methods = {run.method for run in runs.values()}
        if len(methods) != 1:
            raise UserError(f"table_b3 compares training-set sizes of one method; got {', '.join(sorted(methods))}")
        labels.sort(key=lambda lb: -(runs[lb].subset or math.inf))
        row_header = "Training set size"
        default = (
            f"Registration results on {dataset} ({plural(n_pairs, 'pair')}) of "
            f"{display_name(runs[labels[0]].method)} trained on training sets of varying size."
        )
    else:
        row_header = "Method"
        default = f"Registration results on {dataset} ({plural(n_pairs, 'pair')})."
        if kind == "table1":
            default += " Parameters of the DP variants are given as (encoder/decoder) total."

    rows = []
    for label in labels:
        record = records.get(label)
        cells = [
            _metric_cell(
                col,
                case_values(df, label, col.key).to_numpy(),
                col.dash_for_initial and runs[label].method == "initial",
            )
            for col in columns
        ]
        mark, extra = _run_state(record)
        if kind == "table_b3":
            name, extra["train_images"] = _size_label(label, record)
        else:
            name = display_name(label)
        if kind == "table1":
            cells.append(_params_cell(label, record))
        rows.append(Row(label, name, cells, extra, mark))
    underline = kind != "table_b3"
    tests = [_mark_column(df, rows, j, col, underline, alpha) for j, col in enumerate(columns)]

    footnotes = []
    for row in rows:
        for col, cell in zip(columns, row.cells, strict=False):
            if "n_inf" in cell.values:
                cell.note = "abcdefghijklmnopqrstuvwxyz"[len(footnotes) % 26]
                footnotes.append((cell.note, _inf_note(col, row, cell)))
    footnotes += _run_notes(rows, records)

    headers = [(c.header, c.latex) for c in columns]
    keys = [c.key for c in columns]
    if kind == "table1":
        headers.append(("Params (M)", "Params (M)"))
        keys.append("params")
    sentences = [caption or default, note or "", *notes, rule_text(alpha, underline)]
    if underline:
        sentences.append(_threshold_text(columns, tests, alpha))
    return Table(kind, " ".join(s for s in sentences if s), row_header, headers, keys, rows, footnotes)


def build_cost_table(
    records: Mapping[str, RunRecord],
    runtimes: Sequence[tuple[str, pd.DataFrame]],
    caption: str | None = None,
) -> Table:
    """Training and registration cost per method (no marks).

    Columns: parameters (M, from the run record), epochs, training wall time (h), compute (GPU-h on a CUDA
    device; CPU-h = hours × the run's threads on CPU), optimiser steps/s, peak training memory (GPU MiB
    on CUDA, peak RSS otherwise), mean registration time per pair (s), peak registration memory (GPU MiB
    when any pair used the GPU, peak RSS otherwise) and the number of registered pairs.
    """
    reg = dict(runtimes)
    labels = list(dict.fromkeys([*records, *reg]))
    if not labels:
        raise UserError("the cost table needs at least one --summary or --runtime")
    rows = []
    for label in labels:
        record = records.get(label)
        mark, extra = _run_state(record)
        rows.append(Row(label, display_name(label), [*_train_cost_cells(record), *_reg_cost_cells(reg.get(label))],
                        extra, mark))  # fmt: skip
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
    notes = [n for n in _run_notes(rows, records) if n[0]]  # registration-only rows (Greedy) need no record
    return Table("cost", caption or default, "Method", headers, keys, rows, notes)


def _num(x: Any) -> float | None:
    """A finite number from a record field, else None."""
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


def _train_cost_cells(record: RunRecord | None) -> list[Cell]:
    """The training cells of a run (its record's parameter count and ``result``); ``-`` without a record."""
    s = record.result if record is not None else {}
    params = record.params.total if record is not None else None
    epochs, secs, steps = (_num(s.get(k)) for k in ("epochs", "train_time_s", "steps_per_s"))
    cuda = str(s.get("device", "")).startswith("cuda")
    hours = secs / 3600 if secs is not None else None
    device_h = None if hours is None else hours if cuda else hours * (_num(s.get("threads")) or 1.0)
    mem = _num(s.get("peak_gpu_mib" if cuda else "peak_rss_mib"))
    unit, kind = ("GPU", "GPU") if cuda else ("CPU", "RSS")
    return [
        _cost_cell(params, format_params(params or 0)),
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
_LATEX_TEXT = {
    "±": r"$\pm$",
    "×": r"$\times$",
    "α": r"$\alpha$",
    "∞": r"$\infty$",
    "−": r"$-$",
    "≤": r"$\leq$",
    "†": r"\textdagger{}",
    "‡": r"\textdaggerdbl{}",
    "§": r"\S{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and spell ±, ×, α, ∞, −, ≤, †, ‡, § in LaTeX)."""
    return "".join(_LATEX_SPECIAL.get(ch, _LATEX_TEXT.get(ch, ch)) for ch in text)


def _latex_note(symbol: str) -> str:
    return f"\\textsuperscript{{{latex_escape(symbol)}}}" if symbol else ""


def _latex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text)
    marked = {"best": f"\\textbf{{{text}}}", "close": f"\\underline{{{text}}}"}.get(cell.mark, text)
    return marked + _latex_note(cell.note)


def render_tabular(table: Table) -> str:
    """The booktabs ``tabular`` alone (for ``\\input`` into a paper's own ``table`` environment)."""
    spec = "l" + "c" * len(table.headers)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    lines.append(" & ".join([latex_escape(table.row_header), *(h[1] for h in table.headers)]) + r" \\")
    lines.append("\\midrule")
    for row in table.rows:
        label = latex_escape(row.label) + _latex_note(row.note)
        lines.append(" & ".join([label, *(_latex_cell(c) for c in row.cells)]) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_latex(table: Table) -> str:
    """A complete LaTeX document (article + booktabs) holding the table with its caption and footnotes;
    landscape when the table has more than six columns."""
    geometry = "landscape,margin=1.5cm" if len(table.headers) > 6 else "margin=1.5cm"
    notes = "".join(f"{_latex_note(symbol)}{latex_escape(text)}\\par\n" for symbol, text in table.notes)
    if notes:
        notes = f"\\par\\smallskip\n\\begin{{minipage}}{{\\linewidth}}\\footnotesize\n{notes}\\end{{minipage}}\n"
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
        f"{notes}"
        "\\end{table}\n"
        "\\end{document}\n"
    )


def _md_note(symbol: str) -> str:
    return f"<sup>{symbol}</sup>" if symbol else ""


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    return {"best": f"**{text}**", "close": f"<u>{text}</u>"}.get(cell.mark, text) + _md_note(cell.note)


def render_markdown(table: Table) -> str:
    """A pipe table under its caption, its footnotes below; bold as ``**x**``, underline as ``<u>x</u>``,
    footnote symbols as ``<sup>x</sup>``."""
    head = [table.row_header, *(h[0] for h in table.headers)]
    lines = [table.caption, "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for row in table.rows:
        label = row.label.replace("|", "\\|") + _md_note(row.note)
        lines.append("| " + " | ".join([label, *(_md_cell(c) for c in row.cells)]) + " |")
    if table.notes:
        lines += ["", *(f"- {_md_note(symbol)}{' ' if symbol else ''}{text}" for symbol, text in table.notes)]
    return "\n".join(lines) + "\n"


def table_frame(table: Table) -> pd.DataFrame:
    """The CSV copy: one row per table row, plain numbers (``{key}_mean``, ``{key}_sd``, ``{key}_n``, …,
    ``{key}_n_inf`` / ``{key}_finite_mean`` for a column with infinite values), the marks (``{key}_mark``:
    ``best`` = bold, ``close`` = underline) and the run's state (``converged``, ``collapsed``)."""
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
