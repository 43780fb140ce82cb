"""``dirbench evaluate``: one pair to JSON (NaN → null, inf → "inf"), a dataset pair list to tidy CSV."""

from __future__ import annotations

import csv
import io
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
        metrics=[*metrics.DEFAULT_METRICS, "sdlogj_raw"],
    )
    dice = [from_json(v) for v in data["per_label"]["dice"]]
    assert np.array_equal(dice, expected["dice"].items, equal_nan=True)
    assert data["metrics"]["dice"] == expected["dice"].value and 0 < expected["dice"].value < 1
    for name in ("sdlogj", "sdlogj_raw", "ndv", "nondiff_voxels"):
        assert data["metrics"][name] == expected[name].value
    assert expected["sdlogj"].value > 0 and expected["nondiff_voxels"].value == 0.0


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
        for label, value in zip([1, 2, 3], expected["hd95"].items, strict=True):
            assert got["hd95", str(label)] == value
        assert expected["ndv"].value > 0 and expected["tre"].value > 0


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


def test_bad_labels_are_one_line_errors_naming_the_flag(tmp_path, dataset, pair_files, capsys):
    out = tmp_path / "x.csv"
    assert main([*batch(dataset, "test", "initial", out), "--zero", "--labels", "1,x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dirbench: error: --labels '1,x': expected oasis, lumir or a list") and err.count("\n") == 1
    argv = ["evaluate", "--disp", str(pair_files["disp"]), "--ndv-mask", "none", "--json", str(tmp_path / "m.json")]
    assert main([*argv, "--labels", "5-3"]) == 1
    assert "--labels '5-3': empty range '5-3'" in capsys.readouterr().err
    assert main([*batch(dataset, "test", "x", out), "--zero", "--spacing", "1", "1", "1"]) == 1
    assert "--spacing: for one pair only" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- spacing, progress, summary


def test_single_pair_takes_the_spacing_from_the_header_as_the_pair_list_does(tmp_path, capsys):
    """The same files give the same HD95 / TRE in both modes (a 1 mm default used to make them differ)."""
    spacing = (2.0, 3.0, 1.5)
    affine = np.diag([*spacing, 1.0])
    root = tmp_path / "aniso"
    entries = []
    for i, shift in enumerate((0, 2), start=1):
        names = {key: f"{key}{i:04d}.nii.gz" for key in ("img", "seg")}
        seg = phantom(shift)
        save_image(root / names["img"], np.where(seg > 0, 50.0, 0.0).astype(np.float32), affine)
        save_labels(root / names["seg"], seg, affine)
        entries.append({"image": names["img"], "label": names["seg"]})
    spec = {"name": "aniso", "tensorImageShape": {"0": list(SHAPE)}, "spacing": list(spacing),
            "labels": {"1": "a", "2": "b", "3": "c"}, "training": entries,
            "test": [{"fixed": entries[0]["image"], "moving": entries[1]["image"]}]}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(spec))
    out_csv = tmp_path / "initial.csv"
    assert main([*batch(root / "dataset.json", "test", "initial", out_csv), "--zero"]) == 0
    listed = {(r["metric"], r["label"]): float(r["value"]) for r in read_csv(out_csv)}
    one = ["evaluate", "--zero", "--fixed-seg", str(root / "seg0001.nii.gz"), "--moving-seg",
           str(root / "seg0002.nii.gz"), "--labels", "1-3", "--ndv-mask", "none"]  # fmt: skip
    assert main([*one, "--json", str(tmp_path / "header.json")]) == 0
    header = strict_json(tmp_path / "header.json")
    assert header["metrics"]["hd95"] == listed["hd95", ""] and header["metrics"]["dice"] == listed["dice", ""]
    assert listed["hd95", "2"] == 2 * 1.5  # label 2 moves by 2 voxels along z (1.5 mm)
    assert main([*one, "--spacing", "1", "1", "1", "--json", str(tmp_path / "iso.json")]) == 0
    assert strict_json(tmp_path / "iso.json")["metrics"]["hd95"] != header["metrics"]["hd95"]  # the old default
    out = capsys.readouterr().out
    assert f"evaluate: dice {listed['dice', '']:.4g}, hd95 {listed['hd95', '']:.4g} mm" in out


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (tqdm shows its bar only there)."""

    def isatty(self) -> bool:
        return True


def test_pair_list_progress_bar_and_one_line_summary(tmp_path, dataset, monkeypatch, capsys):
    out = tmp_path / "initial.csv"
    assert main([*batch(dataset, "test", "initial", out), "--zero"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # not a terminal: no bar in job logs
    rows = {(r["fixed"], r["metric"]): float(r["value"]) for r in read_csv(out) if r["label"] == ""}
    dice, hd95, sdlogj = (np.mean([rows["0001", m], rows["0003", m]]) for m in ("dice", "hd95", "sdlogj"))
    line = captured.out.strip()
    assert line.count("\n") == 0 and line.startswith("evaluate initial on tiny:test: 2 pairs; mean ")
    assert f"dice {dice:.4g}, hd95 {hd95:.4g} mm, sdlogj {sdlogj:.4g}, ndv 0%, nondiff_voxels 0%, tre " in line
    assert line.endswith(f" mm -> {out}")

    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main([*batch(dataset, "test", "initial", out), "--zero"]) == 0
    assert "evaluate initial" in terminal.getvalue() and "2/2" in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    assert main([*batch(dataset, "test", "initial", out), "--zero", "--no-progress"]) == 0
    assert terminal.getvalue() == ""


# --------------------------------------------------------------------------- ground truth and inverse fields


@pytest.fixture
def truth_dataset(dataset: Path) -> Path:
    """``dataset`` declared as having ground truth: image i has the constant template warp c_i (and its
    inverse -c_i), so the true displacement of a pair is c_fixed - c_moving; voxels 1 × 2 × 1 mm."""
    root = dataset.parent
    spec = json.loads(dataset.read_text())
    for i, entry in enumerate(spec["training"], start=1):
        c = np.array([0.5 * i, 0.0, -0.25 * i], np.float32)
        for key, sign, name in (("warp", 1.0, "warp"), ("inverse_warp", -1.0, "invwarp")):
            save_disp(root / f"gt/{name}{i:04d}.nii.gz", np.broadcast_to(sign * c, (*SHAPE, 3)).copy(), AFFINE)
            entry[key] = f"gt/{name}{i:04d}.nii.gz"
    spec.update(ground_truth="template_warps", spacing=[1.0, 2.0, 1.0])
    path = root / "truth.json"
    path.write_text(json.dumps(spec))
    return path


def test_epe_rows_with_ground_truth_and_ic_error_rows_with_inverse_fields(tmp_path, truth_dataset):
    true = {("0001", "0002"): np.array([-0.5, 0.0, 0.25]), ("0003", "0001"): np.array([1.0, 0.0, -0.5])}
    mm = np.array([1.0, 2.0, 1.0])
    out = tmp_path / "initial.csv"
    assert main([*batch(truth_dataset, "test", "initial", out), "--zero"]) == 0
    rows = read_csv(out)
    case = [r["metric"] for r in rows if r["label"] == "" and r["fixed"] == "0001"]
    assert case == ["dice", "hd95", "sdlogj", "ndv", "nondiff_voxels", "tre", "epe"]  # no inverse: no ic_error
    got = {(r["fixed"], r["moving"]): float(r["value"]) for r in rows if r["metric"] == "epe"}
    for pair, t in true.items():
        assert got[pair] == pytest.approx(np.linalg.norm(t * mm), rel=1e-6)  # the zero field: |true| in mm

    disp_dir = tmp_path / "disp"
    for (f, m), t in true.items():
        save_disp(disp_dir / f"disp_{f}_{m}.nii.gz", np.broadcast_to(t, (*SHAPE, 3)).astype(np.float32), AFFINE)
    inverse = np.broadcast_to(-true["0001", "0002"] + [0.0, 0.5, 0.0], (*SHAPE, 3)).astype(np.float32)
    save_disp(disp_dir / "inv_0001_0002.nii.gz", inverse, AFFINE)  # off by 0.5 voxel along y
    out = tmp_path / "truth.csv"
    assert main([*batch(truth_dataset, "test", "truth", out), "--disp-dir", str(disp_dir)]) == 0
    rows = read_csv(out)
    got = {(r["fixed"], r["metric"]): float(r["value"]) for r in rows if r["label"] == ""}
    assert got["0001", "epe"] == 0.0 and got["0003", "epe"] == 0.0  # the true field
    assert got["0001", "ic_error"] == pytest.approx(0.5 * 2.0)  # 0.5 voxel of 2 mm
    assert ("0003", "ic_error") not in got  # that pair has no inverse file
    assert [r["metric"] for r in rows if r["fixed"] == "0001" and r["label"] == ""][-2:] == ["epe", "ic_error"]


def test_an_unknown_ground_truth_kind_is_a_one_line_error(tmp_path, truth_dataset, capsys):
    spec = json.loads(truth_dataset.read_text())
    spec["ground_truth"] = "oracle"
    truth_dataset.write_text(json.dumps(spec))
    out = tmp_path / "initial.csv"
    assert main([*batch(truth_dataset, "test", "initial", out), "--zero"]) == 1
    assert f"{truth_dataset}: unknown ground_truth 'oracle'; expected one of template_warps" in capsys.readouterr().err
    assert not out.exists()


def test_help_renders_at_the_top_level_and_for_evaluate(capsys):
    for argv in (["--help"], ["evaluate", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "evaluate" in out and "--no-progress" in out and "ic_error" in out
