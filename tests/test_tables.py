"""Tables (dirbench.tables, ``dirbench table`` / ``dirbench cost-table``) on small synthetic CSVs."""

from __future__ import annotations

import csv
import json
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
from dirbench.tables import (
    build_cost_table,
    build_table,
    format_ndv,
    format_params,
    model_params,
    read_eval_csvs,
    read_runtime,
    read_summary,
    render_markdown,
    table_frame,
    write_table,
)

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
    assert alpha[4].text == "-"  # not a registered method, no summary
    assert [c.text for c in init] == ["0.5500 (0.0408)", "4.00 (0.00)", "-", "-", "-"]
    assert alpha[0].values["sd"] == pytest.approx(math.sqrt(0.02 / 3))
    assert [r.label for r in table.rows] == ["Initial", "alpha"]
    assert "(3 pairs)" in table.caption and "Wilcoxon" in table.caption and "Holm" in table.caption
    # Initial takes no part in the marks, so the single other method is best everywhere
    assert [c.mark for c in init] == [""] * 5 and [c.mark for c in alpha[:4]] == ["best"] * 4


def test_hd95_inf_prints_inf(tmp_path: Path) -> None:
    a = write_eval_csv(tmp_path / "a.csv", "alpha", {"dice": [0.8, 0.7, 0.75], "hd95": [np.inf, 2.0, 2.5]})
    b = write_eval_csv(tmp_path / "b.csv", "beta", {"dice": [0.7, 0.6, 0.65], "hd95": [3.0, 2.9, 2.8]})
    table = build_table("table_b2", read_eval_csvs([a, b]))
    hd_alpha, hd_beta = table.rows[0].cells[1], table.rows[1].cells[1]
    assert hd_alpha.text == "inf" and math.isinf(hd_alpha.values["mean"])
    assert hd_beta.text == "2.9000" and hd_beta.mark == "best"
    frame = table_frame(table)
    assert math.isinf(frame.loc[0, "hd95_mean"])


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
    run = tmp_path / "runs" / "LUMIR" / "dp-convic-c" / "all"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"method": "dp-convic-c", "train_images": 3384}))
    table = build_table("table_b3", read_eval_csvs(paths), [read_summary(run / "summary.json")])
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


def test_dp_conv_mf_parameter_split() -> None:
    total, encoder = model_params("dp-conv-mf")
    assert format_params(total, encoder) == "(0.51/2.35) 2.85"  # paper Table 1


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
        write_eval_csv(tmp_path / "odd.csv", "my_method&50%", {"dice": [0.5] * 30, "hd95": [3.0] * 30})
    )
    table = build_table("table1", read_eval_csvs(paths))
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
    for path, summary in (
        (
            gpu,
            {
                "method": "vfa",
                "params": 2014827,
                "epochs": 200,
                "train_time_s": 7200.0,
                "steps_per_s": 2.5,
                "peak_rss_mib": 3000.0,
                "peak_gpu_mib": 12000.0,
                "device": "cuda:0",
                "threads": 8,
            },
        ),
        (
            cpu,
            {
                "method": "dp-conv-mf",
                "params": 2854079,
                "epochs": 3,
                "train_time_s": 1800.0,
                "steps_per_s": 0.04,
                "peak_rss_mib": 2500.0,
                "peak_gpu_mib": 0.0,
                "device": "cpu",
                "threads": 4,
            },
        ),
    ):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(summary))
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
    table = build_cost_table([read_summary(s) for s in summaries], [read_runtime(r) for r in runtimes])
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
