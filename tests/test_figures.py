"""Figures (dirbench.figures, ``dirbench figure``): data helpers on analytic fixtures, files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from dirbench.cli import main
from dirbench.errors import UserError
from dirbench.figures import (
    PNG_DPI,
    boxplot_figure,
    jacobian_slice,
    save_figure,
    scaling_figure,
    structure_dice,
    trainsize_figure,
)
from dirbench.io import save_disp, save_image
from dirbench.tables import read_eval_csvs
from test_tables import write_eval_csv


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
    assert labels[0].startswith("TransMorph (") and set(labels[1:]) == {"VoxelMorph", "(a)DP-Conv-MF"}
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
