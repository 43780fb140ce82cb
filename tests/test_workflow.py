"""The Snakemake workflow: lint, the paper DAG's size, and the ci config run end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(cwd), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("config", ["paper", "demo", "ci"])
def test_lint_is_clean(config: str) -> None:
    result = snakemake("--lint", "--configfile", str(REPO / f"workflow/config/{config}.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_paper_dag_lists_every_job(tmp_path: Path) -> None:
    result = snakemake("-n", "--configfile", str(REPO / "workflow/config/paper.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    # 11 Table-1 methods + 3 extra scaling sizes on OASIS and 10 new training subsets; 10 Table-B2 methods
    # + 7 Table-B3 subsets on LUMIR.
    assert int(counts["train"]) == 43
    assert int(counts["learning_curves"]) == 3  # one per table
    assert int(counts["register_greedy"]) == 1 and int(counts["total"]) == 191


def test_config_schema_rejects_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "workflow/config/ci.yaml").read_text() + "\ntypo_key: 1\n")
    result = snakemake("-n", "--configfile", str(bad), cwd=tmp_path)
    assert result.returncode != 0
    assert "typo_key" in result.stdout + result.stderr


def _assert_never_oversubscribed(runs: Path, cores: int) -> None:
    """The training sessions recorded in the run records never ran with more threads together than cores
    (snakemake#3913 made Snakemake 9.10-9.16 start two 2-thread trainings on 2 cores)."""
    sessions = []
    for path in runs.rglob("summary.json"):
        result = json.loads(path.read_text())["result"]
        start, end = (datetime.fromisoformat(result["session"][k]).timestamp() for k in ("started", "finished"))
        sessions.append((start, end, result["threads"], path.parent))
    assert len(sessions) >= 5
    for start, _, _, _ in sessions:  # the threads in use are highest just after some session starts
        running = [(threads, where) for s, e, threads, where in sessions if s <= start < e]
        assert sum(t for t, _ in running) <= cores, running


@pytest.mark.slow
def test_ci_config_runs_end_to_end(tmp_path: Path) -> None:
    result = snakemake("--cores", "2", "--configfile", str(REPO / "workflow/config/ci.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = tmp_path / "results" / "ci"
    for name in ("table1", "table_b2", "table_b3", "cost"):
        for ext in (".tex", ".table.tex", ".csv", ".md"):
            assert (out / "tables" / f"{name}{ext}").stat().st_size > 0
    for name in ("fig_b2_scaling", "fig_b2_trainsize", "fig_b3_qualitative", "dice_boxplot"):
        assert (out / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    assert (out / "submission" / "lumir_submission.zip").stat().st_size > 0
    # Every compute rule left a benchmark file; tidy CSVs hold every case metric of every method.
    assert list((out / "benchmarks" / "train").rglob("*.tsv"))
    evals = pd.concat(pd.read_csv(p) for p in (out / "eval").rglob("*.csv"))
    assert set(evals["method"]) >= {"initial", "greedy", "voxelmorph", "dp-conv-c", "dp-convic-c", "dp-conv-c@3"}
    assert {"dice", "hd95", "sdlogj", "ndv", "nondiff_voxels"} <= set(evals["metric"])
    # Greedy registers: it beats the zero displacement on Dice.
    case = evals[evals["label"].isna() & (evals["metric"] == "dice")].groupby("method")["value"].mean()
    assert case["greedy"] > case["initial"]
    assert {"epe", "ic_error"} <= set(evals["metric"])  # demo data has ground truth; dp-convic-c is IC
    for name in ("table1", "table_b2", "table_b3"):
        assert (out / "figures" / f"curves_{name}.pdf").read_bytes().startswith(b"%PDF")
    _assert_never_oversubscribed(out / "runs", cores=2)
    # A second run has nothing to do, and the report builds.
    again = snakemake("-n", "--configfile", str(REPO / "workflow/config/ci.yaml"), cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    report = snakemake(
        "--report", str(tmp_path / "report.html"), "--configfile", str(REPO / "workflow/config/ci.yaml"),
        cwd=tmp_path,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 10_000
