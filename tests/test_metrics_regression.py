"""Regression pin of ``dirbench evaluate``'s tidy CSV on a small deterministic fixture.

The expected numbers below are the values the metrics engine of ``main`` at commit b9e939a (before
``dirbench.metrics`` became a package) wrote for this fixture; they pin the refactoring, not the
definitions (those are tested against analytic fixtures and literal reference implementations in
``test_metrics.py`` and ``test_metrics_reference.py``). The fixture is built from closed-form sinusoids
and ``scipy.ndimage.map_coordinates`` only, and the field is quantised to multiples of 2⁻¹⁰ voxel
(exact in float32), so it does not depend on random-number or filter implementations.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from dirbench.cli import main
from dirbench.io import save_disp, save_image, save_labels
from scipy import ndimage as ndi
from synthetic import _phantom as _ellipsoids

SHAPE = (24, 28, 20)
AFFINE = np.eye(4)


def _sines(shape: tuple[int, int, int], amp: float, phase: float) -> np.ndarray:
    """``[*shape, 3]`` smooth field: one low-frequency sinusoid per component, ``amp`` voxels."""
    grid = np.indices(shape, dtype=np.float64)
    n = np.array(shape, np.float64).reshape(3, 1, 1, 1)
    x = grid / n
    comps = [
        amp * np.sin(2 * np.pi * (x[1] + 0.5 * x[2]) + phase),
        amp * np.cos(2 * np.pi * (x[0] - x[2]) + 2 * phase),
        amp * np.sin(2 * np.pi * (0.5 * x[0] + x[1]) - phase),
    ]
    return np.stack(comps, axis=-1)


def _quantise(field: np.ndarray) -> np.ndarray:
    return (np.round(field * 1024.0) / 1024.0).astype(np.float32)


def _phantom() -> np.ndarray:
    """Labels 1..4 (:func:`synthetic._phantom`: nested ellipsoids, split in x) and 6 (a small box)."""
    seg = _ellipsoids(SHAPE)
    seg[1:4, 1:4, 1:4] = 6
    return seg


def _pull(volume: np.ndarray, field: np.ndarray) -> np.ndarray:
    coords = np.indices(SHAPE, dtype=np.float64) + np.moveaxis(field, -1, 0)
    return ndi.map_coordinates(volume, coords, order=0, mode="constant", cval=0)


def _landmarks(seg_shift: np.ndarray) -> np.ndarray:
    lms = np.zeros(SHAPE, np.int16)
    for k, (x, y, z) in enumerate([(6, 8, 6), (15, 12, 9), (10, 19, 12)], start=1):
        lms[x : x + 2, y : y + 2, z : z + 2] = k
    return _pull(lms, seg_shift).astype(np.int16)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed 0001, moving 0002 (the fixed anatomy pulled through a smooth field); a rough registration."""
    root = tmp_path_factory.mktemp("regression")
    fixed = _phantom()
    truth = _quantise(_sines(SHAPE, 1.7, 0.3))
    moving = _pull(fixed, -truth)  # moving ≈ fixed(y - truth): the registration should undo it
    moving[moving == 6] = 0  # label 6: absent from the moving segmentation (NaN)
    fixed_lms = _landmarks(np.zeros((*SHAPE, 3)))
    moving_lms = _landmarks(-truth)
    for i, (seg, lms) in enumerate(((fixed, fixed_lms), (moving, moving_lms)), start=1):
        save_image(root / f"img{i:04d}.nii.gz", np.where(seg > 0, 50.0 + 10 * seg, 0.0).astype(np.float32), AFFINE)
        save_labels(root / f"seg{i:04d}.nii.gz", seg, AFFINE)
        save_labels(root / f"lms{i:04d}.nii.gz", lms, AFFINE)
    checker = np.indices(SHAPE).sum(0) % 2 == 0
    rough = np.where(checker[..., None], 0.6, -0.6) * (np.indices(SHAPE)[0] > 14)[..., None]  # folds for x > 14
    disp = 0.8 * truth.astype(np.float64) + rough * np.array([1.0, 0.5, 0.0])
    disp[4:10, 8:14, 6:12, 0] -= 1.5 * (np.arange(4, 10) - 7.0)[:, None, None]  # a fold: d(u_x)/dx = -1.5
    disp = _quantise(disp)
    save_disp(root / "disp" / "disp_0001_0002.nii.gz", disp, AFFINE)
    entries = [{"image": f"img{i:04d}.nii.gz", "label": f"seg{i:04d}.nii.gz", "landmarks": f"lms{i:04d}.nii.gz"}
               for i in (1, 2)]  # fmt: skip
    for name, spacing in (("iso", [1.0, 1.0, 1.0]), ("aniso", [1.0, 1.5, 2.0])):
        spec = {"name": name, "tensorImageShape": {"0": list(SHAPE)}, "spacing": spacing,
                "labels": {str(k): f"l{k}" for k in (1, 2, 3, 4, 6)}, "training": entries,
                "test": [{"fixed": entries[0]["image"], "moving": entries[1]["image"]}]}  # fmt: skip
        (root / f"{name}.json").write_text(json.dumps(spec))
    return root


def _evaluate(root: Path, name: str, source: list[str], method: str) -> dict[tuple[str, str], str]:
    out = root / f"{name}-{method}.csv"
    argv = ["evaluate", "--pairs", f"{root / name}.json:test", *source, "--method", method, "--csv", str(out)]
    assert main(argv) == 0
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["method", "dataset", "fixed", "moving", "metric", "label", "value"]
        rows = list(reader)
    assert {(r["method"], r["dataset"], r["fixed"], r["moving"]) for r in rows} == {(method, name, "0001", "0002")}
    assert [r["metric"] for r in rows if r["label"] == ""] == ["dice", "hd95", "sdlogj", "ndv", "nondiff_voxels",
                                                                "tre"]  # fmt: skip
    return {(r["metric"], r["label"]): r["value"] for r in rows}


def _check(got: dict[tuple[str, str], str], expected: dict[tuple[str, str], float]) -> None:
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(float(got[key])), key
        else:
            assert float(got[key]) == pytest.approx(value, rel=1e-9, abs=1e-12), key


NAN = math.nan

# Values written by main at b9e939a (see the module docstring).
EXPECTED_ISO = {
    ("dice", ""): 0.7706650083586132,
    ("dice", "1"): 0.7891834193204056,
    ("dice", "2"): 0.7866752081998719,
    ("dice", "3"): 0.8157019294743846,
    ("dice", "4"): 0.6910994764397905,
    ("dice", "6"): NAN,
    ("hd95", ""): 1.8535533905932737,
    ("hd95", "1"): 1.0,
    ("hd95", "2"): 1.4142135623730951,
    ("hd95", "4"): 4.0,
    ("hd95", "6"): NAN,
    ("sdlogj", ""): 0.08270820703039342,
    ("ndv", ""): 5.938771284389608,
    ("nondiff_voxels", ""): 3.219995496509795,
    ("tre", ""): 1.3242929107403099,
}
EXPECTED_ANISO = {
    ("dice", ""): 0.7706650083586132,
    ("hd95", ""): 2.4013878188659974,
    ("hd95", "1"): 1.8027756377319946,
    ("hd95", "2"): 2.0,
    ("hd95", "3"): 1.8027756377319946,
    ("hd95", "4"): 4.0,
    ("tre", ""): 1.910531725498651,
}
EXPECTED_ZERO = {
    ("dice", ""): 0.5288255793450711,
    ("dice", "4"): 0.3163265306122449,
    ("hd95", ""): 2.1770509831248424,
    ("hd95", "3"): 2.0,
    ("sdlogj", ""): 0.0,
    ("ndv", ""): 0.0,
    ("nondiff_voxels", ""): 0.0,
    ("tre", ""): 2.3140939207058335,
}


def test_registration_rows_are_unchanged(fixture_dir: Path) -> None:
    got = _evaluate(fixture_dir, "iso", ["--disp-dir", str(fixture_dir / "disp")], "dp")
    _check(got, EXPECTED_ISO)
    assert len(got) == 6 + 2 * 5  # six case metrics, Dice and HD95 per label (labels 1, 2, 3, 4, 6)


def test_anisotropic_spacing_rows_are_unchanged(fixture_dir: Path) -> None:
    got = _evaluate(fixture_dir, "aniso", ["--disp-dir", str(fixture_dir / "disp")], "dp")
    _check(got, EXPECTED_ANISO)


def test_zero_field_rows_are_unchanged(fixture_dir: Path) -> None:
    got = _evaluate(fixture_dir, "iso", ["--zero"], "initial")
    _check(got, EXPECTED_ZERO)
