"""``dirbench compare``: paired differences, wins and Holm-corrected Wilcoxon p-values, checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dirbench import cli
from scipy.stats import wilcoxon
from test_tables import write_eval_csv


def test_compare_reports_paired_statistics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = np.array([0.80, 0.82, 0.79, 0.85, 0.81, 0.83, 0.84, 0.80])
    b = a - np.array([0.01, 0.02, -0.005, 0.03, 0.015, 0.025, 0.035, 0.012])
    c = a - 0.001 * np.arange(1, 9)
    paths = [write_eval_csv(tmp_path / f"{m}.csv", m, {"dice": v, "hd95": 5 - 3 * v})
             for m, v in (("alpha", a), ("beta", b), ("gamma", c))]  # fmt: skip
    argv = ["compare", "--csv", *map(str, paths), "--metric", "dice", "--pair", "alpha:beta", "alpha+gamma:beta"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dice (higher is better); paired two-sided Wilcoxon, Holm over 2 comparison(s)"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out[3:]]
    p1 = wilcoxon(a - b).pvalue
    p2 = wilcoxon((a + c) / 2 - b).pvalue
    first, second = cells
    assert first[:3] == ["alpha", "beta", "8"] and first[7:10] == ["7", "0", "1"]  # wins, ties, losses
    assert float(first[5]) == pytest.approx(np.mean(a - b), rel=1e-3)
    assert float(first[10]) == pytest.approx(p1, rel=1e-3)
    low, high = sorted((p1, p2))  # Holm by hand: the smaller p times 2, the larger kept at least as large
    holm = {low: min(1.0, 2 * low), high: max(min(1.0, 2 * low), high)}
    assert float(first[11]) == pytest.approx(holm[p1], rel=1e-3)
    assert second[0] == "alpha+gamma" and float(second[3]) == pytest.approx(np.mean((a + c) / 2), rel=1e-3)
    # hd95 = 5 - 3 dice: lower is better, so the wins and losses are those of Dice
    assert cli.main(["compare", "--csv", *map(str, paths), "--metric", "hd95", "--pair", "alpha:beta"]) == 0
    row = [c.strip() for c in capsys.readouterr().out.splitlines()[3].strip("|").split("|")]
    assert row[7:10] == ["7", "0", "1"]


def test_compare_names_a_missing_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_eval_csv(tmp_path / "a.csv", "alpha", {"dice": [0.8, 0.7]})
    assert cli.main(["compare", "--csv", str(path), "--metric", "dice", "--pair", "alpha:omega"]) == 1
    assert "no dice rows for method 'omega'" in capsys.readouterr().err
    assert cli.main(["compare", "--csv", str(path), "--metric", "dise", "--pair", "alpha:alpha"]) == 1
    assert "--metric dise: unknown metric 'dise'" in capsys.readouterr().err
