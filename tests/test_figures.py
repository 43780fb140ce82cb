"""Figures (dirbench.figures, ``dirbench figure``): data helpers on analytic fixtures, files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from dirbench.cli import main
from dirbench.curves import curves_figure, read_run_curve
from dirbench.errors import UserError
from dirbench.figures import (
    MAX_WIDTH_IN,
    PNG_DPI,
    boxplot_figure,
    jacobian_slice,
    save_figure,
    scaling_figure,
    structure_dice,
    trainsize_figure,
)
from dirbench.io import save_disp, save_image
from dirbench.run_record import ParamCounts
from dirbench.tables import read_eval_csvs
from test_tables import write_eval_csv, write_record


def _check_outputs(prefix: Path, size_inches: tuple[float, float]) -> None:
    """PDF (with embedded TrueType fonts, fonttype 42) and PNG of the figure's size at 200 dpi."""
    pdf = Path(f"{prefix}.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf
    png = matplotlib.image.imread(f"{prefix}.png")
    width, height = size_inches
    assert png.shape[:2] == (round(height * PNG_DPI), round(width * PNG_DPI))


def _dice_csv(tmp_path: Path, label: str, mean: float, n: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    dice = mean + rng.normal(0, 0.01, n)
    left, right = dice + 0.02, dice - 0.02
    return write_eval_csv(tmp_path / f"{label}.csv", label, {"dice": dice}, {1: left, 2: right, 3: dice})


def test_scaling_and_trainsize_figures(tmp_path: Path) -> None:
    sizes = {"voxelmorph-s": 2e6, "voxelmorph-l": 11e6, "dp-conv-mf-small": 1.4e6, "dp-conv-mf-large": 7.5e6}
    df = read_eval_csvs([_dice_csv(tmp_path, m, 0.75 + 0.01 * i, seed=i) for i, m in enumerate(sizes)])
    ref = read_eval_csvs([_dice_csv(tmp_path, "transmorph", 0.79)])
    fig = scaling_figure(df, sizes, ref)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("TransMorph (") and set(labels[1:]) == {"VoxelMorph", "(a) DP-Conv-MF"}
    save_figure(fig, tmp_path / "scaling")
    _check_outputs(tmp_path / "scaling", tuple(fig.get_size_inches()))

    sub = read_eval_csvs(
        [_dice_csv(tmp_path, f"dp-conv-mf@{n}", 0.7 + 0.01 * i) for i, n in enumerate((10, 50))]
        + [_dice_csv(tmp_path, "dp-conv-mf", 0.8)]
    )
    with pytest.raises(UserError, match="--full-size"):
        trainsize_figure(sub)
    fig = trainsize_figure(sub, full_size=300, reference=ref)
    line = fig.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [10, 50, 300])
    save_figure(fig, tmp_path / "trainsize")
    _check_outputs(tmp_path / "trainsize", tuple(fig.get_size_inches()))


def test_structure_dice_merges_hemispheres(tmp_path: Path) -> None:
    names = {1: "Left-Hippocampus", 2: "Right-Hippocampus", 3: "Brain-Stem"}
    df = read_eval_csvs(
        [
            write_eval_csv(
                tmp_path / "a.csv",
                "vfa",
                {"dice": [0.7, 0.8]},
                {1: [0.8, 0.9], 2: [0.6, np.nan], 3: [0.5, 0.4]},
            )
        ]
    )
    long = structure_dice(df, names, merge_hemispheres=True)
    assert list(long["structure"].cat.categories) == ["Hippocampus", "Brain-Stem"]
    hip = long[long["structure"] == "Hippocampus"].sort_values("fixed")["dice"].to_numpy()
    np.testing.assert_allclose(hip, [0.7, 0.9])  # mean of both sides; NaN side ignored
    assert set(long["method"]) == {"VFA"}
    split = structure_dice(df, names)
    assert len(split) == 5  # the NaN right-hippocampus value of pair 2 is dropped
    assert list(split["structure"].cat.categories) == ["Left-Hippocampus", "Right-Hippocampus", "Brain-Stem"]
    fig = boxplot_figure(df, names, merge_hemispheres=True)
    save_figure(fig, tmp_path / "box")
    _check_outputs(tmp_path / "box", tuple(fig.get_size_inches()))


def test_boxplot_of_35_structures_fits_a_page(tmp_path: Path) -> None:
    """OASIS's 35 labels for the 13 rows of the demo Table 1: wrapped onto rows, at most 2,400 px wide (the
    old single row was 4,420 px for 5 methods), every structure drawn once, one legend for all rows."""
    rng = np.random.default_rng(3)
    names = {i: f"Left-Structure-{i}" for i in range(1, 36)}
    labels = ["initial", "greedy", "voxelmorph", "transmorph", "vfa", "sitreg", "dp-conv-mf", "dp-conv-mfc",
              "dp-conv-c", "dp-convic-mf", "dp-convic-c", "dp-vfa", "dp-convic-mfc"]  # fmt: skip
    paths = [
        write_eval_csv(tmp_path / f"{m}.csv", m, {"dice": rng.uniform(0.6, 0.8, 4)},
                       {i: rng.uniform(0.4, 0.9, 4) for i in names})
        for m in labels
    ]  # fmt: skip
    fig = boxplot_figure(read_eval_csvs(paths), names)
    save_figure(fig, tmp_path / "box")
    png = matplotlib.image.imread(tmp_path / "box.png")
    assert png.shape[1] <= MAX_WIDTH_IN * PNG_DPI == 2400
    _check_outputs(tmp_path / "box", tuple(fig.get_size_inches()))
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
    assert sorted(ticks) == sorted(names.values())  # each structure once, across the rows
    assert len(fig.axes) > 1 and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["Initial", "Greedy"]


def _curve_run(run_dir: Path, label: str, val: list[float], **record: object) -> Path:
    """A run folder: metrics.csv (10 epochs of 16 updates, validation every 2 epochs) and its record."""
    run_dir.mkdir(parents=True)
    rows = ["epoch,updates,loss,sim,reg,val_metric,val_value,lr,epoch_time_s,steps_per_s,peak_rss_mib,peak_gpu_mib"]
    for epoch in range(1, 11):
        v = val[epoch // 2 - 1] if epoch % 2 == 0 else ""
        metric = "dice" if v != "" else ""
        rows.append(f"{epoch},{16 * epoch},{1 - 0.03 * epoch},{0.9},{0.01},{metric},{v},0.0001,1.0,16.0,500,0")
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    return write_record(run_dir / "summary.json", label, **record)


def test_learning_curves(tmp_path: Path) -> None:
    flat = _curve_run(tmp_path / "vm", "voxelmorph", [0.6175] * 5, converged=False,
                      result={"val_metric": "dice", "val_initial": 0.6175, "best_epoch": 2, "best_value": 0.6175})
    good = _curve_run(tmp_path / "dp", "dp-conv-mf", [0.62, 0.66, 0.68, 0.685, 0.686], converged=True,
                      result={"val_metric": "dice", "val_initial": 0.60, "best_epoch": 10, "best_value": 0.686})
    dead = _curve_run(tmp_path / "c", "dp-conv-c", [0.3, 0.1, 0.0, 0.0, 0.0], converged=None,
                      collapse={"epoch": 6, "reason": "validation Dice 0.000 is far below Initial's 0.600"},
                      result={"val_metric": "dice", "best_epoch": 2, "best_value": 0.3})  # fmt: skip
    fig = curves_figure([read_run_curve(p) for p in (flat, good, dead)])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "VoxelMorph\nnot converged", "(a) DP-Conv-MF\nconverged", "(a) DP-Conv-C\ncollapsed at epoch 6"
    ]
    loss = panels[1].lines[0]
    np.testing.assert_array_equal(loss.get_xdata(), 16 * np.arange(1, 11))  # against updates
    np.testing.assert_allclose(loss.get_ydata(), 1 - 0.03 * np.arange(1, 11))
    twin = next(ax for ax in fig.axes if ax is not panels[1] and ax.bbox.bounds == panels[1].bbox.bounds)
    val, best = twin.lines[0], twin.lines[-1]
    np.testing.assert_array_equal(val.get_xdata(), [0, 32, 64, 96, 128, 160])  # the untrained model at 0 updates
    np.testing.assert_allclose(val.get_ydata(), [0.60, 0.62, 0.66, 0.68, 0.685, 0.686])
    assert (best.get_xdata()[0], best.get_ydata()[0]) == (160, 0.686)  # the best epoch, marked
    assert twin.get_ylabel() == "validation Dice ↑"
    save_figure(fig, tmp_path / "curves")
    _check_outputs(tmp_path / "curves", tuple(fig.get_size_inches()))
    assert fig.get_size_inches()[0] * PNG_DPI <= 2400


def test_cli_curves_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = _curve_run(tmp_path / "runs" / "demo" / "vfa" / "all", "vfa", [0.6, 0.7, 0.71, 0.72, 0.72],
                         result={"val_metric": "dice", "best_epoch": 8})  # fmt: skip
    out = tmp_path / "figs" / "curves"
    assert main(["figure", "curves", "--summary", str(summary), "--out", str(out)]) == 0
    _check_outputs(out, (MAX_WIDTH_IN / 3, 3.5))
    assert capsys.readouterr().out == f"wrote {out}.pdf\nwrote {out}.png\n"
    (tmp_path / "runs" / "demo" / "vfa" / "all" / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    assert main(["figure", "curves", "--summary", str(summary), "--out", str(out)]) == 1
    assert "metrics.csv: no column(s) updates, val_metric, val_value" in capsys.readouterr().err
    assert main(["figure", "curves", "--out", str(out)]) == 1
    assert "figure curves needs --summary" in capsys.readouterr().err


def test_scaling_reads_parameter_counts_from_the_records(tmp_path: Path) -> None:
    csvs = [_dice_csv(tmp_path, m, 0.75 + 0.01 * i, seed=i) for i, m in enumerate(("voxelmorph-s", "voxelmorph"))]
    runs = [write_record(tmp_path / "s.json", "voxelmorph-s", ParamCounts(98_000)),
            write_record(tmp_path / "v.json", "voxelmorph", ParamCounts(301_411))]  # fmt: skip
    out = tmp_path / "scaling"
    argv = ["figure", "scaling", "--csv", *map(str, csvs), "--out", str(out)]
    assert main([*argv, "--summary", *map(str, runs)]) == 0
    assert main([*argv, "--summary", str(runs[0])]) == 1  # VoxelMorph's record missing: no model is built


def test_jacobian_slice_affine_and_fold() -> None:
    rng = np.random.default_rng(7)
    A = rng.normal(0, 0.2, (3, 3))
    grid = np.stack(np.indices((6, 7, 5)), axis=-1).astype(np.float64)
    disp = (grid @ A.T).astype(np.float32)  # u(x) = A x → J = I + A everywhere
    for axis, index in ((0, 0), (1, 3), (2, 4)):
        det = jacobian_slice(disp, axis, index)
        assert det.shape == tuple(s for i, s in enumerate(disp.shape[:3]) if i != axis)
        np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + A), rtol=1e-5)
    fold = np.zeros((6, 7, 5, 3), np.float32)
    fold[..., 0] = -2.0 * grid[..., 0]  # x ↦ −x: determinant −1
    np.testing.assert_allclose(jacobian_slice(fold, 2, 3), -1.0)


def test_cli_figures(tmp_path: Path) -> None:
    shape = (20, 24, 16)
    x = np.indices(shape).astype(np.float32)
    fixed = np.exp(-((x[0] - 10) ** 2 + (x[1] - 12) ** 2 + (x[2] - 8) ** 2) / 40)
    moving = np.exp(-((x[0] - 11) ** 2 + (x[1] - 12) ** 2 + (x[2] - 8) ** 2) / 40)
    affine = np.eye(4)
    save_image(tmp_path / "f.nii.gz", fixed, affine)
    save_image(tmp_path / "m.nii.gz", moving, affine)
    smooth = np.zeros((*shape, 3), np.float32)
    smooth[..., 0] = 1.0
    folded = smooth.copy()
    folded[..., 0] = 3.0 * np.sin(x[0] / 1.2) * np.exp(-((x[1] - 12) ** 2 + (x[2] - 8) ** 2) / 20)
    save_disp(tmp_path / "a.nii.gz", smooth, affine)
    save_disp(tmp_path / "b.nii.gz", folded, affine)
    out = tmp_path / "figs" / "qual"
    assert (
        main(
            [
                "figure",
                "qualitative",
                "--fixed",
                str(tmp_path / "f.nii.gz"),
                "--moving",
                str(tmp_path / "m.nii.gz"),
                "--disp",
                f"vfa={tmp_path / 'a.nii.gz'}",
                f"voxelmorph={tmp_path / 'b.nii.gz'}",
                "--axis",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    _check_outputs(out, (2.1 * 2 + 0.8, 6.9))

    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"1": "Left-X", "2": "Right-X", "3": "Y"}}))
    csvs = [str(_dice_csv(tmp_path, m, 0.8, seed=i)) for i, m in enumerate(("vfa", "dp-conv-mf"))]
    assert (
        main(
            [
                "figure",
                "boxplot",
                "--csv",
                *csvs,
                "--dataset-json",
                str(tmp_path / "dataset.json"),
                "--merge-hemispheres",
                "--out",
                str(tmp_path / "figs" / "box"),
            ]
        )
        == 0
    )
    assert Path(f"{tmp_path}/figs/box.png").is_file()
    assert main(["figure", "scaling", "--out", str(tmp_path / "s")]) == 1  # needs --csv
    assert (
        main(
            [
                "figure",
                "qualitative",
                "--fixed",
                str(tmp_path / "f.nii.gz"),
                "--moving",
                str(tmp_path / "m.nii.gz"),
                "--disp",
                "nonsense",
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 1
    )
