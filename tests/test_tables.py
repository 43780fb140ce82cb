"""Tables (dirbench.tables, ``dirbench table`` / ``dirbench cost-table``) on small synthetic CSVs."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dirbench.cli import main
from dirbench.errors import UserError
from dirbench.run_record import DatasetIdentity, ParamCounts, Preprocessing, RunId, RunRecord
from dirbench.stats import min_pairs
from dirbench.tables import (
    build_cost_table,
    build_table,
    format_ndv,
    format_params,
    plural,
    read_eval_csvs,
    read_records,
    read_runtime,
    render_latex,
    render_markdown,
    table_frame,
    write_table,
)
from dirbench.train_config import TrainConfig

HEADER = ["method", "dataset", "fixed", "moving", "metric", "label", "value"]


def write_eval_csv(
    path: Path,
    method: str,
    cases: Mapping[str, Sequence[float]],
    per_label: Mapping[int, Sequence[float]] | None = None,
    dataset: str = "OASIS",
) -> Path:
    """An evaluation CSV as the evaluator writes it: case rows (empty label) and per-label dice rows.

    Pair k is ``(f"{k:04d}", f"{k + 100:04d}")``; ``cases[metric][k]`` is its case value.
    """
    n = len(next(iter(cases.values())))
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for k in range(n):
            fixed, moving = f"{k:04d}", f"{k + 100:04d}"
            for metric, values in cases.items():
                writer.writerow([method, dataset, fixed, moving, metric, "", repr(float(values[k]))])
            for label, values in (per_label or {}).items():
                writer.writerow([method, dataset, fixed, moving, "dice", label, repr(float(values[k]))])
    return path


def write_record(
    path: Path,
    label: str,
    params: ParamCounts | None = None,
    converged: bool | None = True,
    collapse: dict | None = None,
    result: dict | None = None,
    dataset: str = "OASIS",
) -> Path:
    """A complete run record (``summary.json``) as the trainer writes it, for run label ``label``."""
    run = RunId.from_label(label, dataset)
    RunRecord(
        run=run,
        train=TrainConfig(method=run.method, dataset=f"data/{dataset}/dataset.json", train_subset=run.subset),
        model={},
        params=params or ParamCounts(1_000_000),
        preprocessing=Preprocessing(1.0, (32, 48, 32), (6.0, 6.0, 6.0)),
        dataset=DatasetIdentity(dataset, "0" * 64, f"data/{dataset}/dataset.json"),
        status="collapsed" if collapse else "finished",
        converged=converged,
        collapse=collapse,
        result=result or {},
    ).write(path)
    return path


def test_read_keeps_ids_and_parses_inf(tmp_path: Path) -> None:
    path = write_eval_csv(
        tmp_path / "a.csv", "vfa", {"dice": [0.8, 0.7], "hd95": [np.inf, 2.0]}, {3: [0.5, 0.6]}
    )
    df = read_eval_csvs([path])
    assert list(df["fixed"].unique()) == ["0000", "0001"]
    assert np.isinf(df[(df["metric"] == "hd95") & (df["fixed"] == "0000")]["value"].item())
    assert set(df["label"]) == {"", "3"}


def test_table1_values_are_hand_computed(tmp_path: Path) -> None:
    a = write_eval_csv(
        tmp_path / "a.csv",
        "initial",
        {
            "dice": [0.5, 0.6, 0.55],
            "hd95": [4.0, 4.0, 4.0],
            "sdlogj": [0.0, 0.0, 0.0],
            "ndv": [0.0, 0.0, 0.0],
        },
    )
    b = write_eval_csv(
        tmp_path / "b.csv",
        "alpha",
        {
            "dice": [0.8, 0.9, 0.7],
            "hd95": [1.5, 2.5, 2.0],
            "sdlogj": [0.10, 0.12, 0.14],
            "ndv": [0.06, 0.07, 0.065],
        },
    )
    table = build_table("table1", read_eval_csvs([a, b]))
    init, alpha = (row.cells for row in table.rows)
    # mean 0.8, SD = sqrt((0 + 0.01 + 0.01) / 3) = 0.08165 (ddof = 0)
    assert alpha[0].text == "0.8000 (0.0816)"
    assert alpha[1].text == "2.00 (0.41)"  # SD sqrt(0.5 / 3) = 0.408
    assert alpha[2].text == "12.00 (1.63)"  # ×100: mean 12, SD sqrt(8 / 3) = 1.633
    assert alpha[3].text == "0.065"
    assert alpha[4].text == "?"  # a trained method without a run record
    assert [c.text for c in init] == ["0.5500 (0.0408)", "4.00 (0.00)", "-", "-", "-"]
    assert alpha[0].values["sd"] == pytest.approx(math.sqrt(0.02 / 3))
    assert [r.label for r in table.rows] == ["Initial", "alpha"]
    assert "(3 pairs)" in table.caption and "Wilcoxon" in table.caption and "Holm" in table.caption
    assert table.notes == [("", "No run record (summary.json) was given for alpha: their convergence and "
                                "parameter counts are unknown.")]  # fmt: skip
    # Initial takes no part in the marks, so the single other method is best everywhere
    assert [c.mark for c in init] == [""] * 5 and [c.mark for c in alpha[:4]] == ["best"] * 4
    assert [h[0] for h in table.headers] == ["Dice ↑", "HD95 (mm) ↓", "SDlogJ (×100) ↓", "NDV (%) ↓", "Params (M)"]


def test_infinite_hd95_is_explained_and_never_marked(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    hd = rng.normal(2.0, 0.2, 8)
    with_inf = hd + rng.normal(0, 0.05, 8)
    with_inf[3] = np.inf  # a label vanished after warping in pair 3
    a = write_eval_csv(tmp_path / "a.csv", "alpha", {"dice": rng.normal(0.8, 0.01, 8), "hd95": with_inf})
    b = write_eval_csv(tmp_path / "b.csv", "beta", {"dice": rng.normal(0.7, 0.01, 8), "hd95": hd})
    table = build_table("table_b2", read_eval_csvs([a, b]))
    hd_alpha, hd_beta = table.rows[0].cells[1], table.rows[1].cells[1]
    assert hd_alpha.text == "∞" and hd_alpha.note == "a" and hd_alpha.mark == ""
    assert hd_beta.mark == "best"
    finite = np.delete(with_inf, 3)
    assert table.notes[0] == (
        "a",
        "alpha: HD95 is infinite for 1 of 8 pairs (a label vanished after warping), so its mean is infinite, "
        f"as in the official evaluators; over the other 7 pairs it is {np.mean(finite):.4f} ({np.std(finite):.4f}).",
    )
    frame = table_frame(table)
    assert math.isinf(frame.loc[0, "hd95_mean"]) and frame.loc[0, "hd95_n_inf"] == 1
    assert frame.loc[0, "hd95_finite_mean"] == pytest.approx(np.mean(finite))
    md = render_markdown(table)
    assert "| ∞<sup>a</sup> |" in md and "- <sup>a</sup> alpha: HD95 is infinite" in md
    tex = render_latex(table)
    assert r"$\infty$\textsuperscript{a}" in tex and r"\textsuperscript{a}alpha: HD95 is infinite" in tex


def test_one_pair_is_singular_and_never_underlined(tmp_path: Path) -> None:
    """n = 1: no test can reach α, so no cell is underlined (the old rule underlined every Greedy cell)."""
    paths = [
        write_eval_csv(tmp_path / "i.csv", "initial", {"dice": [0.5], "hd95": [5.0]}),
        write_eval_csv(tmp_path / "g.csv", "greedy", {"dice": [0.7], "hd95": [3.1]}),
        write_eval_csv(tmp_path / "v.csv", "vfa", {"dice": [0.8], "hd95": [3.0]}),
    ]
    table = build_table("table1", read_eval_csvs(paths))
    assert "(1 pair)" in table.caption and "(1 pairs)" not in table.caption
    assert {c.mark for r in table.rows for c in r.cells} == {"", "best"}
    assert "With 1 comparison per column, that test cannot reach α = 0.05 with fewer than 6 pairs." in table.caption
    assert "With 1 pair, nothing is underlined." in table.caption
    assert plural(1, "pair") == "1 pair" and plural(0, "pair") == "0 pairs" and plural(3384, "image") == "3,384 images"


@pytest.mark.parametrize("n", [5, 6])
def test_underline_needs_enough_pairs_for_the_comparisons(tmp_path: Path, n: int) -> None:
    """Two methods compared with the best: Holm over m = 2 needs n ≥ 7; one compared: n ≥ 6."""
    best = np.random.default_rng(n).normal(0.8, 0.01, n)
    # noise-level partners: alternating signs, the negative steps a little larger (means just below best)
    sign = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)
    steps = 1e-4 * (np.arange(n) // 2 + 1) + np.where(sign > 0, 0.0, 1e-6)
    paths = [
        write_eval_csv(tmp_path / "b.csv", "best", {"dice": best}),
        write_eval_csv(tmp_path / "c1.csv", "close1", {"dice": best + sign * steps}),
        write_eval_csv(tmp_path / "c2.csv", "close2", {"dice": best + 2 * sign * steps}),
    ]
    three = build_table("table_b2", read_eval_csvs(paths))
    assert min_pairs(0.05, 2) == 7
    assert [r.cells[0].mark for r in three.rows] == ["best", "", ""]
    assert "With 2 comparisons per column, that test cannot reach α = 0.05 with fewer than 7 pairs." in three.caption
    assert f"With {n} pairs, nothing is underlined." in three.caption
    two = build_table("table_b2", read_eval_csvs(paths[:2]))
    if n >= min_pairs(0.05, 1):
        assert [r.cells[0].mark for r in two.rows] == ["best", "close"]  # noise-level difference
        assert "nothing is underlined" not in two.caption
    else:
        assert [r.cells[0].mark for r in two.rows] == ["best", ""]


def _constructed(tmp_path: Path) -> list[Path]:
    """Three methods: 'best' clearly best, 'twin' noise-level close, 'worse' clearly worse (all columns)."""
    rng = np.random.default_rng(11)
    n = 30
    dice = rng.normal(0.82, 0.02, n)
    hd = rng.normal(1.9, 0.3, n)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    steps = 1e-4 * (np.arange(n) // 2 + 1) + np.where(np.arange(n) % 2 == 0, 0.0, 1e-6)
    return [
        write_eval_csv(tmp_path / "initial.csv", "initial", {"dice": dice - 0.3, "hd95": hd + 2}),
        write_eval_csv(
            tmp_path / "twin.csv", "twin", {"dice": dice + sign * steps, "hd95": hd - sign * steps}
        ),
        write_eval_csv(tmp_path / "best.csv", "best", {"dice": dice, "hd95": hd}),
        write_eval_csv(
            tmp_path / "worse.csv",
            "worse",
            {"dice": dice - 0.05 + rng.normal(0, 0.004, n), "hd95": hd + 0.4 + rng.normal(0, 0.02, n)},
        ),
    ]


def test_bold_and_underline_marks(tmp_path: Path) -> None:
    table = build_table("table_b2", read_eval_csvs(_constructed(tmp_path)))
    marks = {row.key: [c.mark for c in row.cells] for row in table.rows}
    assert table.keys == ["dice", "hd95", "ndv"]  # no TRE column (no landmarks); NDV shown even if absent
    assert marks == {
        "initial": ["", "", ""],
        "twin": ["close", "close", ""],
        "best": ["best", "best", ""],
        "worse": ["", "", ""],
    }
    assert {row.cells[2].text for row in table.rows} == {"-"}
    md = render_markdown(table)
    assert "<u>" in md and "**" in md and "TRE is not shown" in table.caption
    best_row = next(line for line in md.splitlines() if line.startswith("| best"))
    assert best_row.count("**") == 4
    frame = table_frame(table).set_index("method")
    assert frame.loc["twin", "dice_mark"] == "close" and frame.loc["best", "hd95_mark"] == "best"


def test_table_b3_sizes_and_bold_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    base = rng.normal(0.77, 0.03, 12)
    paths = []
    for label, off in (
        ("dp-convic-c@10", -0.01),
        ("dp-convic-c", 0.0),
        ("dp-convic-c@1000", 0.001),
        ("dp-convic-c@100", -0.002),
    ):
        tre = base * 3 - off
        paths.append(
            write_eval_csv(
                tmp_path / f"{label}.csv",
                label,
                {"dice": base + off, "hd95": 3.4 - off + 0 * base, "tre": tre, "ndv": 0 * base + 0.03},
            )
        )
    summary = write_record(tmp_path / "summary.json", "dp-convic-c", result={"train_images": 3384}, dataset="LUMIR")
    table = build_table("table_b3", read_eval_csvs(paths), read_records([summary]))
    assert [r.label for r in table.rows] == ["all data / 3,384", "1,000", "100", "10"]
    assert [r.extra["train_images"] for r in table.rows] == [3384, 1000, 100, 10]
    marks = [[c.mark for c in r.cells] for r in table.rows]
    # Dice: @1000 best; HD95 / TRE: @1000 lowest; NDV identical → every row bold; no underline at all
    assert [m[0] for m in marks] == ["", "best", "", ""]
    assert [m[1] for m in marks] == ["", "best", "", ""]
    assert [m[3] for m in marks] == ["best"] * 4
    assert "close" not in {m for row in marks for m in row}
    with pytest.raises(UserError, match="one method"):
        build_table("table_b3", read_eval_csvs([*paths, _constructed(tmp_path)[1]]))


def test_format_ndv_follows_paper() -> None:
    assert [format_ndv(x) for x in (1.2712, 0.8301, 0.3349, 0.06512, 0.02712, 0.00071, 0.0999, 0.0)] == [
        "1.27",
        "0.83",
        "0.33",
        "0.065",
        "0.027",
        "0.0007",
        "0.10",
        "0",
    ]
    assert format_ndv(math.inf) == "inf"


def test_format_params() -> None:
    assert format_params(2_854_079, 507_504) == "(0.51/2.35) 2.85"
    assert format_params(46_556_979) == "46.56"


def test_params_come_from_the_run_record(tmp_path: Path) -> None:
    """The Params cell is the record's count: the paper's split for DP-Conv-MF, and an overridden model's
    own count (the demo's TransMorph with window 2³), never a default-size model built by the table."""
    import methods

    dp = ParamCounts.of_model(methods.build("dp-conv-mf"))
    small = ParamCounts.of_model(methods.build("transmorph", window_size=(2, 2, 2), img_size=(32, 48, 32)))
    default_total = 46_556_979  # TransMorph at its default size (paper Table 1: 46.56 M)
    assert small.total != default_total
    paths = [write_eval_csv(tmp_path / f"{m}.csv", m, {"dice": [0.7, 0.8]}) for m in ("dp-conv-mf", "transmorph")]
    records = read_records(
        [write_record(tmp_path / "dp" / "summary.json", "dp-conv-mf", dp),
         write_record(tmp_path / "tm" / "summary.json", "transmorph", small)]
    )  # fmt: skip
    table = build_table("table1", read_eval_csvs(paths), records)
    params = {r.key: r.cells[-1] for r in table.rows}
    assert params["dp-conv-mf"].text == "(0.51/2.35) 2.85"  # paper Table 1
    assert params["transmorph"].text == f"{small.total / 1e6:.2f}"
    assert params["transmorph"].values["total"] == small.total


def test_unconverged_and_collapsed_runs_are_marked(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    labels = ["initial", "greedy", "voxelmorph", "dp-conv-c", "vfa", "dp-vfa"]
    paths = [write_eval_csv(tmp_path / f"{m}.csv", m, {"dice": rng.normal(0.7, 0.02, 8)}) for m in labels]
    records = read_records(
        [write_record(tmp_path / "vm" / "summary.json", "voxelmorph", converged=False),
         write_record(tmp_path / "c" / "summary.json", "dp-conv-c", converged=False,
                      collapse={"epoch": 12, "reason": "validation NCC 0.001 is near 0"}),
         write_record(tmp_path / "v" / "summary.json", "vfa", converged=True),
         write_record(tmp_path / "d" / "summary.json", "dp-vfa", converged=None)]
    )  # fmt: skip
    table = build_table("table1", read_eval_csvs(paths), records, note="DEMO numbers, not the paper's protocol.")
    # The config's description follows the first sentence, whatever the rows' marks (a row's mark once replaced it).
    assert table.caption.startswith("Registration results on OASIS (8 pairs). Parameters of the DP variants are "
                                    "given as (encoder/decoder) total. DEMO numbers, not the paper's protocol. Bold:")
    assert {r.key: r.note for r in table.rows} == {
        "initial": "", "greedy": "", "voxelmorph": "†", "dp-conv-c": "‡", "vfa": "", "dp-vfa": "§",
    }  # fmt: skip
    notes = dict(table.notes)
    assert notes["‡"] == (
        "Collapsed: the collapse guard stopped the training ((a) DP-Conv-C at epoch 12: validation NCC 0.001 is "
        "near 0); these numbers are those of a degenerate model."
    )
    assert notes["†"].startswith("Not converged: the best validation value (Dice, or 1 − NCC²) still improved by 0.005")
    assert notes["§"].startswith("Convergence not assessed")
    md = render_markdown(table)
    assert "| VoxelMorph<sup>†</sup> |" in md and "| (a) DP-Conv-C<sup>‡</sup> |" in md
    assert r"VoxelMorph\textsuperscript{\textdagger{}}" in render_latex(table)
    frame = table_frame(table).set_index("method")
    assert frame.loc[["voxelmorph", "dp-conv-c", "vfa"], "converged"].tolist() == [False, False, True]
    assert bool(frame.loc["dp-conv-c", "collapsed"]) and not bool(frame.loc["vfa", "collapsed"])


def test_epe_and_ice_columns_when_the_csvs_have_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    n = 6
    epe = {m: rng.uniform(0.5, 1.5, n) for m in ("initial", "greedy", "dp-convic-c")}
    ice = rng.uniform(0.01, 0.05, n)
    paths = [
        write_eval_csv(tmp_path / "i.csv", "initial", {"dice": rng.uniform(0.5, 0.6, n), "epe": epe["initial"]}),
        write_eval_csv(tmp_path / "g.csv", "greedy", {"dice": rng.uniform(0.6, 0.7, n), "epe": epe["greedy"]}),
        write_eval_csv(tmp_path / "c.csv", "dp-convic-c",
                       {"dice": rng.uniform(0.7, 0.8, n), "epe": epe["dp-convic-c"], "ic_error": ice}),
    ]  # fmt: skip
    table = build_table("table1", read_eval_csvs(paths))
    assert table.keys == ["dice", "hd95", "sdlogj", "ndv", "epe", "ic_error", "params"]
    assert [h[0] for h in table.headers][4:6] == ["EPE (mm) ↓", "ICE (mm) ↓"]
    cells = {r.key: r.cells for r in table.rows}
    for m, values in epe.items():
        assert cells[m][4].text == f"{np.mean(values):.2f} ({np.std(values):.2f})"  # Initial's EPE is shown too
    assert cells["dp-convic-c"][5].text == f"{np.mean(ice):.2f} ({np.std(ice):.2f})"
    assert cells["greedy"][5].text == "-" and cells["initial"][5].text == "-"
    assert "EPE" not in "".join(h[0] for h in build_table("table1", read_eval_csvs(paths[1:2])).headers[:4])
    no_gt = [write_eval_csv(tmp_path / "x.csv", "vfa", {"dice": [0.8, 0.7]})]
    assert build_table("table1", read_eval_csvs(no_gt)).keys == ["dice", "hd95", "sdlogj", "ndv", "params"]


def test_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("method,dataset,fixed,moving,metric,value\nx,OASIS,1,2,dice,0.5\n")
    with pytest.raises(UserError, match=r"bad\.csv: expected columns"):
        read_eval_csvs([bad])
    a = write_eval_csv(tmp_path / "a.csv", "alpha", {"dice": [0.8]})
    with pytest.raises(UserError, match="duplicate dice rows for method alpha"):
        read_eval_csvs([a, a])
    other = write_eval_csv(tmp_path / "o.csv", "beta", {"dice": [0.8]}, dataset="LUMIR")
    with pytest.raises(UserError, match="mix datasets"):
        read_eval_csvs([a, other])
    nonnum = tmp_path / "n.csv"
    nonnum.write_text(",".join(HEADER) + "\nx,OASIS,1,2,dice,,abc\n")
    with pytest.raises(UserError, match=r"n\.csv: a 'value' is not a number"):
        read_eval_csvs([nonnum])


def test_write_table_outputs_and_pdflatex(tmp_path: Path) -> None:
    paths = _constructed(tmp_path)
    paths.append(
        write_eval_csv(tmp_path / "odd.csv", "my_method&50%", {"dice": [0.5] * 30, "hd95": [3.0] * 29 + [np.inf]})
    )
    records = read_records(
        [write_record(tmp_path / "w.json", "worse", converged=False),
         write_record(tmp_path / "t.json", "twin", collapse={"epoch": 3, "reason": "NCC ~ 0 & 95% outside"}),
         write_record(tmp_path / "b.json", "best", converged=None)]
    )  # fmt: skip
    table = build_table("table1", read_eval_csvs(paths), records)
    written = write_table(table, tmp_path / "out" / "table1")
    assert [p.name for p in written] == ["table1.tex", "table1.table.tex", "table1.md", "table1.csv"]
    tex = written[0].read_text()
    for needle in (
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"\textbf{",
        r"\underline{",
        r"my\_method\&50\%",
        r"$\infty$\textsuperscript{a}",
        r"\textsuperscript{\textdagger{}}",
        r"\textsuperscript{\textdaggerdbl{}}",
        r"\textsuperscript{\S{}}",
        r"NCC \textasciitilde{} 0 \& 95\% outside",
    ):
        assert needle in tex
    assert written[1].read_text().startswith(r"\begin{tabular}")
    assert list(pd.read_csv(written[3])["method"]) == ["initial", "twin", "best", "worse", "my_method&50%"]
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", written[0].name],
        cwd=written[0].parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert (written[0].parent / "table1.pdf").read_bytes().startswith(b"%PDF")


def _cost_inputs(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    gpu = tmp_path / "runs" / "OASIS" / "vfa" / "all" / "summary.json"
    cpu = tmp_path / "runs" / "OASIS" / "dp-conv-mf" / "10" / "summary.json"
    results = {
        "vfa": {"epochs": 200, "train_time_s": 7200.0, "steps_per_s": 2.5, "peak_rss_mib": 3000.0,
                "peak_gpu_mib": 12000.0, "device": "cuda:0", "threads": 8},
        "dp-conv-mf@10": {"epochs": 3, "train_time_s": 1800.0, "steps_per_s": 0.04, "peak_rss_mib": 2500.0,
                          "peak_gpu_mib": 0.0, "device": "cpu", "threads": 4},
    }  # fmt: skip
    write_record(gpu, "vfa", ParamCounts(2014827), result=results["vfa"])
    write_record(cpu, "dp-conv-mf@10", ParamCounts(2854079, 507504, 2346575), converged=False,
                 result=results["dp-conv-mf@10"])  # fmt: skip
    rt_gpu = tmp_path / "disp" / "OASIS" / "vfa" / "all" / "runtime.csv"
    rt_greedy = tmp_path / "disp" / "OASIS" / "greedy" / "all" / "runtime.csv"
    for path, text in (
        (
            rt_gpu,
            "fixed,moving,seconds,peak_rss_mib,peak_gpu_mib\n0001,0002,0.5,2000,1500\n0002,0003,0.7,2100,1600\n",
        ),
        (
            rt_greedy,
            "fixed,moving,seconds,peak_rss_mib,peak_gpu_mib\n0001,0002,50,800,0\n0002,0003,70,900,0\n",
        ),
    ):
        path.parent.mkdir(parents=True)
        path.write_text(text)
    return [gpu, cpu], [rt_gpu, rt_greedy]


def test_cost_table(tmp_path: Path) -> None:
    summaries, runtimes = _cost_inputs(tmp_path)
    table = build_cost_table(read_records(summaries), [read_runtime(r) for r in runtimes])
    rows = {r.key: [c.text for c in r.cells] for r in table.rows}
    assert list(rows) == ["vfa", "dp-conv-mf@10", "greedy"]
    # params, epochs, hours, device-hours (CPU-h = h × threads), steps/s, train memory,
    # registration s/pair, registration memory, pairs
    assert rows["vfa"] == [
        "2.01",
        "200",
        "2.00",
        "2.00 GPU-h",
        "2.50",
        "12000 (GPU)",
        "0.600",
        "1600 (GPU)",
        "2",
    ]
    assert rows["dp-conv-mf@10"] == ["2.85", "3", "0.50", "2.00 CPU-h", "0.0400", "2500 (RSS)", "-", "-", "-"]
    assert rows["greedy"] == ["-"] * 6 + ["60.0", "900 (RSS)", "2"]


def test_cli_table_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in _constructed(tmp_path)]
    assert (
        main(
            [
                "table",
                "--kind",
                "table_b2",
                "--csv",
                *paths,
                "--out",
                str(tmp_path / "t" / "b2"),
                "--caption",
                "Demo.",
            ]
        )
        == 0
    )
    md = (tmp_path / "t" / "b2.md").read_text()
    assert md.startswith("Demo. TRE is not shown") and "(b)" not in md
    summaries, runtimes = _cost_inputs(tmp_path)
    assert (
        main(
            [
                "cost-table",
                "--summary",
                *map(str, summaries),
                "--runtime",
                *map(str, runtimes),
                "--out",
                str(tmp_path / "t" / "cost"),
            ]
        )
        == 0
    )
    assert {p.name for p in (tmp_path / "t").iterdir()} == {
        f"{n}{s}" for n in ("b2", "cost") for s in (".tex", ".table.tex", ".md", ".csv")
    }
    assert (
        main(
            [
                "table",
                "--kind",
                "table1",
                "--csv",
                str(tmp_path / "missing.csv"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 1
    )
    assert "missing.csv: file not found" in capsys.readouterr().err


def test_cli_table1_as_a_user_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``dirbench table`` on demo-like inputs: 1 pair, units, EPE, ∞ explained, run states, record params."""
    cases = {
        "initial": {"dice": [0.55], "hd95": [4.0], "sdlogj": [0.0], "ndv": [0.0], "epe": [1.06]},
        "greedy": {"dice": [0.70], "hd95": [2.5], "sdlogj": [0.05], "ndv": [0.0], "epe": [0.50]},
        "transmorph": {"dice": [0.68], "hd95": [2.6], "sdlogj": [0.06], "ndv": [0.01], "epe": [0.70]},
        "dp-conv-c": {"dice": [0.0], "hd95": [np.inf], "sdlogj": [0.9], "ndv": [4.0], "epe": [46.9]},
    }
    csvs = [str(write_eval_csv(tmp_path / f"{m}.csv", m, c, dataset="demo")) for m, c in cases.items()]
    runs = [
        write_record(tmp_path / "tm" / "summary.json", "transmorph", ParamCounts(1_234_567), converged=False),
        write_record(tmp_path / "c" / "summary.json", "dp-conv-c", ParamCounts(2_307_519, 507_504, 1_800_015),
                     collapse={"epoch": 12, "reason": "validation NCC 0.0004 is near 0"}),
    ]  # fmt: skip
    out = tmp_path / "t" / "table1"
    argv = ["table", "--kind", "table1", "--csv", *csvs, "--summary", *map(str, runs), "--out", str(out)]
    assert main(argv) == 0
    md = Path(f"{out}.md").read_text()
    assert md.startswith("Registration results on demo (1 pair).")
    assert "With 1 pair, nothing is underlined." in md and "<u>" not in md
    assert "| Method | Dice ↑ | HD95 (mm) ↓ | SDlogJ (×100) ↓ | NDV (%) ↓ | EPE (mm) ↓ | Params (M) |" in md
    assert "| TransMorph<sup>†</sup> | 0.6800 (0.0000) | 2.60 (0.00) | 6.00 (0.00) | 0.010 | 0.70 (0.00) | 1.23 |" in md
    assert "| (a) DP-Conv-C<sup>‡</sup> | 0.0000 (0.0000) | ∞<sup>a</sup> |" in md
    assert "(0.51/1.80) 2.31 |" in md
    assert "- <sup>a</sup> (a) DP-Conv-C: HD95 is infinite for 1 of 1 pair (a label vanished after warping)" in md
    assert "- <sup>‡</sup> Collapsed: the collapse guard stopped the training ((a) DP-Conv-C at epoch 12" in md
    assert "- <sup>†</sup> Not converged" in md
    assert not capsys.readouterr().err
