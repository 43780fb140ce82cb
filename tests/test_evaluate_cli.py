"""``dirbench evaluate``: one pair to JSON (NaN → null, inf → "inf"), a dataset pair list to tidy CSV."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from dirbench import metrics
from dirbench.cli import main
from dirbench.io import load_disp, load_image, load_labels, save_disp, save_image, save_labels

SHAPE = (24, 24, 24)
AFFINE = np.eye(4)


def strict_json(path: Path) -> dict:
    """Parse JSON, refusing the non-standard NaN / Infinity tokens."""

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def from_json(value) -> float:
    return math.nan if value is None else float(value)


def phantom(shift: int = 0) -> np.ndarray:
    """Three disjoint boxes; boxes 1 and 2 move by ``shift`` voxels along x and z."""
    seg = np.zeros(SHAPE, np.int32)
    seg[3 + shift : 11 + shift, 4:14, 4:14] = 1  # 8 × 10 × 10
    seg[13:21, 10:20, 8 + shift : 16 + shift] = 2
    seg[3:8, 16:21, 16:21] = 3
    return seg


@pytest.fixture
def pair_files(tmp_path: Path) -> dict[str, Path]:
    """Label 1 and 2 overlap imperfectly, label 3 is absent from the moving segmentation (NaN), label 5
    lies on the moving image's first x-plane, which the field (+1 along x) never samples (inf)."""
    fixed = phantom()
    fixed[20:23, 2:5, 2:5] = 5
    moving = phantom(shift=1)
    moving[moving == 3] = 0
    moving[0, 2:6, 2:6] = 5
    field = np.zeros((*SHAPE, 3), np.float32)
    field[..., 0] = 1.0
    field[8:12, 8:12, 8:12, 1] = 0.9  # a local bump so that the Jacobian metrics are not trivial
    names = ("fixed_seg", "moving_seg", "moving_image", "disp")
    files = {name: tmp_path / f"{name}.nii.gz" for name in names}
    save_labels(files["fixed_seg"], fixed, AFFINE)
    save_labels(files["moving_seg"], moving, AFFINE)
    save_image(files["moving_image"], np.where(moving > 0, 80.0, 0.0).astype(np.float32), AFFINE)
    save_disp(files["disp"], field, AFFINE)
    return files


def test_single_pair_json_encodes_nan_as_null_and_inf_as_string(tmp_path, pair_files):
    out = tmp_path / "out" / "metrics.json"
    argv = ["evaluate", "--disp", str(pair_files["disp"]), "--fixed-seg", str(pair_files["fixed_seg"]),
            "--moving-seg", str(pair_files["moving_seg"]), "--moving-image", str(pair_files["moving_image"]),
            "--labels", "1-3,5", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = strict_json(out)
    assert data["labels"] == [1, 2, 3, 5]
    assert data["per_label"]["dice"][2] is None and data["per_label"]["hd95"][2] is None  # absent: NaN
    assert data["per_label"]["dice"][3] == 0.0 and data["per_label"]["hd95"][3] == "inf"  # vanished
    assert data["metrics"]["hd95"] == "inf"
    assert set(data["metrics"]) == {"dice", "hd95", "sdlogj", "sdlogj_raw", "ndv", "nondiff_voxels"}
    assert data["ndv_mask"] == "moving" and "null" in data["encoding"]

    expected = metrics.evaluate_pair(
        load_disp(pair_files["disp"]),
        fixed_seg=load_labels(pair_files["fixed_seg"]),
        moving_seg=load_labels(pair_files["moving_seg"]),
        labels=[1, 2, 3, 5],
        moving_image=load_image(pair_files["moving_image"]),
        with_sdlogj_raw=True,
    )
    dice = [from_json(v) for v in data["per_label"]["dice"]]
    assert np.array_equal(dice, expected.dice_per_label, equal_nan=True)
    assert data["metrics"]["dice"] == expected.dice and 0 < expected.dice < 1
    for name in ("sdlogj", "sdlogj_raw", "ndv", "nondiff_voxels"):
        assert data["metrics"][name] == getattr(expected, name)
    assert expected.sdlogj > 0 and expected.nondiff_voxels == 0.0


def test_single_pair_errors_name_the_problem(tmp_path, pair_files, capsys):
    out = tmp_path / "m.json"
    base = ["evaluate", "--disp", str(pair_files["disp"]), "--json", str(out)]
    assert main([*base]) == 1  # default NDV mask needs the moving image
    assert "--ndv-mask moving needs the moving image" in capsys.readouterr().err
    missing = tmp_path / "nope.nii.gz"
    assert main(["evaluate", "--disp", str(missing), "--ndv-mask", "none", "--json", str(out)]) == 1
    assert f"{missing}: file not found" in capsys.readouterr().err
    assert main([*base, "--zero", "--ndv-mask", "none"]) == 1
    assert "exactly one of --disp and --zero" in capsys.readouterr().err
    assert not out.exists()
    assert main([*base, "--ndv-mask", "none"]) == 0  # no segmentation: Jacobian metrics only
    assert set(strict_json(out)["metrics"]) == {"sdlogj", "sdlogj_raw", "ndv", "nondiff_voxels"}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Three images with labels and landmarks; pair list ``test``: (0001 ← 0002), (0003 ← 0001)."""
    root = tmp_path / "data"
    entries = []
    for i, shift in enumerate((0, 1, 2), start=1):
        seg = phantom(shift)
        lms = np.zeros(SHAPE, np.int16)
        for k, (x, y, z) in enumerate([(5, 5, 5), (15, 9, 12), (9, 18, 4)], start=1):
            lms[x + shift : x + shift + 2, y : y + 2, z : z + 2] = k
        names = {key: f"{key}/{key}{i:04d}.nii.gz" for key in ("img", "seg", "lms")}
        save_image(root / names["img"], np.where(seg > 0, 60.0 + i, 0.0).astype(np.float32), AFFINE)
        save_labels(root / names["seg"], seg, AFFINE)
        save_labels(root / names["lms"], lms, AFFINE)
        entries.append({"image": names["img"], "label": names["seg"], "landmarks": names["lms"]})
    spec = {
        "name": "tiny",
        "tensorImageShape": {"0": list(SHAPE)},
        "labels": {"1": "a", "2": "b", "3": "c"},
        "training": entries,
        "test": [
            {"fixed": entries[0]["image"], "moving": entries[1]["image"]},
            {"fixed": entries[2]["image"], "moving": entries[0]["image"]},
        ],
    }
    path = root / "dataset.json"
    path.write_text(json.dumps(spec))
    return path


def batch(dataset: Path, pair_list: str, method: str, out: Path) -> list[str]:
    return ["evaluate", "--pairs", f"{dataset}:{pair_list}", "--method", method, "--csv", str(out)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["method", "dataset", "fixed", "moving", "metric", "label", "value"]
        return list(reader)


def test_batch_csv_one_row_per_metric_and_label(tmp_path, dataset, rng):
    disp_dir = tmp_path / "disp"
    fields = {}
    for fixed_id, moving_id in (("0001", "0002"), ("0003", "0001")):
        field = rng.normal(0, 0.6, (*SHAPE, 3)).astype(np.float32)  # rough: folds, NDV > 0
        fields[fixed_id, moving_id] = field
        save_disp(disp_dir / f"disp_{fixed_id}_{moving_id}.nii.gz", field, AFFINE)
    out = tmp_path / "res" / "metrics.csv"
    assert main([*batch(dataset, "test", "dp", out), "--disp-dir", str(disp_dir)]) == 0
    rows = read_csv(out)
    case_names = ["dice", "hd95", "sdlogj", "ndv", "nondiff_voxels", "tre"]
    assert len(rows) == 2 * (len(case_names) + 2 * 3)
    assert {(r["method"], r["dataset"]) for r in rows} == {("dp", "tiny")}
    assert [r["metric"] for r in rows if r["label"] == "" and r["fixed"] == "0001"] == case_names
    assert [r["label"] for r in rows if r["metric"] == "hd95" and r["fixed"] == "0003"] == ["", "1", "2", "3"]

    root = dataset.parent
    for (fixed_id, moving_id), field in fields.items():
        f, m = int(fixed_id), int(moving_id)
        expected = metrics.evaluate_pair(
            field,
            fixed_seg=load_labels(root / f"seg/seg{f:04d}.nii.gz"),
            moving_seg=load_labels(root / f"seg/seg{m:04d}.nii.gz"),
            labels=[1, 2, 3],
            moving_image=load_image(root / f"img/img{m:04d}.nii.gz"),
            fixed_landmarks=load_labels(root / f"lms/lms{f:04d}.nii.gz"),
            moving_landmarks=load_labels(root / f"lms/lms{m:04d}.nii.gz"),
        )
        got = {(r["metric"], r["label"]): float(r["value"]) for r in rows if r["fixed"] == fixed_id}
        for name, value in expected.case_metrics().items():
            assert got[name, ""] == value or (math.isnan(value) and math.isnan(got[name, ""]))
        for label, value in zip([1, 2, 3], expected.hd95_per_label, strict=True):
            assert got["hd95", str(label)] == value
        assert expected.ndv > 0 and expected.tre > 0


def test_batch_zero_field_and_missing_displacement(tmp_path, dataset, capsys):
    out = tmp_path / "initial.csv"
    assert main([*batch(dataset, "test", "initial", out), "--zero"]) == 0
    rows = read_csv(out)
    got = {(r["fixed"], r["metric"], r["label"]): float(r["value"]) for r in rows}
    # zero field: Dice of the raw segmentations; box 1 (8 voxels long in x) of image k is shifted by
    # k - 1 voxels along x
    assert got["0001", "dice", "1"] == 7 / 8
    assert got["0003", "hd95", "1"] == 2.0 and got["0001", "ndv", ""] == 0.0
    assert got["0001", "sdlogj", ""] == pytest.approx(0.0, abs=1e-15)

    disp_dir = tmp_path / "partial"
    save_disp(disp_dir / "disp_0001_0002.nii.gz", np.zeros((*SHAPE, 3), np.float32), AFFINE)
    out2 = tmp_path / "dp.csv"
    assert main([*batch(dataset, "test", "dp", out2), "--disp-dir", str(disp_dir)]) == 1
    assert f"{disp_dir / 'disp_0003_0001.nii.gz'}: displacement file not found" in capsys.readouterr().err
    assert not out2.exists()
    assert main([*batch(dataset, "nope", "x", out2), "--zero"]) == 1
    assert "no pair list 'nope'" in capsys.readouterr().err
