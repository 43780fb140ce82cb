"""Field formats (dirbench.field_formats) and ``dirbench warp`` / ``dirbench export``, proved with real tools.

An LIA, anisotropic pair with fixed and moving on different grids: a moving label map is warped through
one smooth field by our warp (``dirbench warp``), by SimpleITK's ``DisplacementFieldTransform`` +
``Resample`` reading our ITK export, and by Greedy's own reslicer (``greedy -rf … -rm … -r warp``) reading
our Greedy export. They must agree on ≥ 99.5 % of the foreground.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the name SimpleITK documents)
from dirbench.cli import main
from dirbench.errors import UserError
from dirbench.field_formats import (
    INTENT_DISPVECT,
    load_field,
    physical_to_voxel,
    save_field,
    voxel_to_physical,
)
from dirbench.warp import warp_array, warp_image
from scipy.ndimage import gaussian_filter

GREEDY = str(Path(sys.executable).with_name("greedy"))
# LIA axes (as OASIS is stored), anisotropic voxels; the moving grid differs from the fixed one.
FIXED_SHAPE, FIXED_SPACING, FIXED_ORIGIN = (40, 30, 36), (1.0, 1.6, 1.25), (20.0, -22.0, 25.0)
MOVING_SHAPE, MOVING_SPACING, MOVING_ORIGIN = (36, 40, 34), (1.2, 1.1, 1.4), (21.0, -21.0, 23.0)
BLOBS = [((0, 0, 0), (13, 16, 12)), ((-4, 2, 1), (4, 5, 5)), ((5, -3, 3), (5, 4, 4)), ((1, 6, -4), (3, 3, 5))]


def lia(shape: tuple[int, ...], spacing: tuple[float, ...], origin: tuple[float, ...]) -> np.ndarray:
    """Affine of an LIA grid: axis 0 → Left, axis 1 → Inferior, axis 2 → Anterior."""
    affine = np.zeros((4, 4))
    affine[0, 0], affine[2, 1], affine[1, 2] = -spacing[0], -spacing[1], spacing[2]
    affine[:3, 3], affine[3, 3] = origin, 1.0
    return affine


def world_labels(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Ellipsoid labels 1..4 defined in world mm, rendered on a grid (so every grid shows one anatomy)."""
    world = np.tensordot(affine[:3, :3], np.indices(shape, dtype=np.float64), axes=1)
    world += affine[:3, 3].reshape(3, 1, 1, 1)
    labels = np.zeros(shape, np.int16)
    for label, (centre, radii) in enumerate(BLOBS, start=1):
        r2 = sum(((world[k] - centre[k]) / radii[k]) ** 2 for k in range(3))
        labels[r2 <= 1] = label
    return labels


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of the union of the two foregrounds where the labels agree."""
    union = (a > 0) | (b > 0)
    return float((a[union] == b[union]).mean())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(7)
    a_f = lia(FIXED_SHAPE, FIXED_SPACING, FIXED_ORIGIN)
    a_m = lia(MOVING_SHAPE, MOVING_SPACING, MOVING_ORIGIN)
    fixed = world_labels(FIXED_SHAPE, a_f).astype(np.float32)
    moving_seg = world_labels(MOVING_SHAPE, a_m)
    # A smooth physical displacement of up to 4 mm, stored in fixed voxel units.
    mm = np.stack([gaussian_filter(rng.standard_normal(FIXED_SHAPE), 4.0) for _ in range(3)], axis=-1)
    mm *= 4.0 / np.abs(mm).max()
    disp = physical_to_voxel(mm, a_f)
    paths = {"fixed": root / "fixed.nii.gz", "moving_seg": root / "moving_seg.nii.gz", "disp": root / "disp.nii.gz"}
    nib.save(nib.Nifti1Image(fixed, a_f), paths["fixed"])
    nib.save(nib.Nifti1Image(moving_seg, a_m), paths["moving_seg"])
    save_field(paths["disp"], disp, a_f)
    ours = warp_image(moving_seg, a_m, disp, a_f, order=0)
    return {"root": root, "a_f": a_f, "a_m": a_m, "u": disp, "moving_seg": moving_seg, "ours": ours, **paths}


def sitk_warp(field_path: Path, moving_seg: Path, fixed: Path) -> np.ndarray:
    """SimpleITK: read the field as a DisplacementFieldTransform and resample (nearest) onto the fixed grid."""
    field = sitk.ReadImage(str(field_path), sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    out = sitk.Resample(sitk.ReadImage(str(moving_seg)), sitk.ReadImage(str(fixed)), transform,
                        sitk.sitkNearestNeighbor, 0)
    return np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0))  # SimpleITK arrays are [Z, Y, X]


def greedy_warp(warp: Path, moving_seg: Path, fixed: Path, out: Path) -> np.ndarray:
    """Greedy's own nearest-neighbour reslicing of ``moving_seg`` through ``warp``."""
    cmd = [GREEDY, "-d", "3", "-rf", str(fixed), "-ri", "NN", "-rm", str(moving_seg), str(out), "-r", str(warp)]
    subprocess.run(cmd, check=True, capture_output=True)
    return np.asarray(nib.load(str(out)).dataobj).astype(np.int16)


def test_physical_round_trip_and_same_grid_warp_is_the_evaluators(pair: dict, rng: np.random.Generator) -> None:
    u = rng.standard_normal((4, 5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(physical_to_voxel(voxel_to_physical(u, pair["a_f"]), pair["a_f"]), u, atol=1e-5)
    # LIA: voxel axis 1 points Inferior with 1.6 mm voxels, so +1 voxel along axis 1 is −1.6 mm along S.
    np.testing.assert_allclose(voxel_to_physical(np.array([0.0, 1.0, 0.0]), pair["a_f"]), [0, 0, -1.6])
    moving = rng.random((6, 7, 8)).astype(np.float32)
    disp = rng.uniform(-2, 2, (6, 7, 8, 3)).astype(np.float32)
    assert np.array_equal(warp_image(moving, pair["a_f"], disp, pair["a_f"]), warp_array(moving, disp))


def test_itk_export_agrees_with_simpleitk(pair: dict) -> None:
    root = pair["root"]
    assert main(["export", "--disp", str(pair["disp"]), "--format", "itk", "--out", str(root / "itk.nii.gz")]) == 0
    img = nib.load(str(root / "itk.nii.gz"))
    assert img.shape == (*FIXED_SHAPE, 1, 3) and int(img.header["intent_code"]) == 1007
    assert img.get_data_dtype() == np.float32 and np.allclose(img.affine, pair["a_f"])
    theirs = sitk_warp(root / "itk.nii.gz", pair["moving_seg"], pair["fixed"])
    assert (pair["ours"] > 0).mean() > 0.1 and np.abs(pair["u"]).max() > 2.0  # a real test, not a trivial one
    score = agreement(pair["ours"], theirs)
    print(f"SimpleITK agreement: {100 * score:.3f}% of the foreground")
    assert score >= 0.995

    # The checks discriminate: the same LPS vectors under intent DISPVECT (1006) are read by ITK 5.4 as RAS,
    # and RAS vectors under intent VECTOR are off too.
    lps = np.asarray(img.dataobj)
    wrong = nib.Nifti1Image(lps, pair["a_f"])
    wrong.header.set_intent(INTENT_DISPVECT)
    nib.save(wrong, str(root / "lps_as_dispvect.nii.gz"))
    assert agreement(pair["ours"], sitk_warp(root / "lps_as_dispvect.nii.gz", pair["moving_seg"], pair["fixed"])) < 0.95
    ras = nib.Nifti1Image(lps * np.array([-1.0, -1.0, 1.0], np.float32), pair["a_f"])
    ras.header.set_intent("vector")
    nib.save(ras, str(root / "ras_as_vector.nii.gz"))
    assert agreement(pair["ours"], sitk_warp(root / "ras_as_vector.nii.gz", pair["moving_seg"], pair["fixed"])) < 0.95
    # ... and a RAS DISPVECT file (the NIfTI standard, as ITK 5.4 reads it) is read back by us correctly.
    ras.header.set_intent(INTENT_DISPVECT)
    nib.save(ras, str(root / "ras_dispvect.nii.gz"))
    back = load_field(root / "ras_dispvect.nii.gz")
    assert back.format == "dispvect"
    np.testing.assert_allclose(back.disp, pair["u"], atol=1e-4)


def test_greedy_export_agrees_with_greedy_reslicing(pair: dict) -> None:
    root = pair["root"]
    assert main(["export", "--disp", str(pair["disp"]), "--format", "greedy", "--out", str(root / "warp.nii.gz")]) == 0
    theirs = greedy_warp(root / "warp.nii.gz", pair["moving_seg"], pair["fixed"], root / "greedy_resliced.nii.gz")
    score = agreement(pair["ours"], theirs)
    print(f"Greedy agreement: {100 * score:.3f}% of the foreground")
    assert score >= 0.995
    flipped = nib.load(str(root / "warp.nii.gz"))
    bad = nib.Nifti1Image(np.asarray(flipped.dataobj) * np.float32(-1), pair["a_f"], flipped.header)
    nib.save(bad, str(root / "negated.nii.gz"))
    assert agreement(pair["ours"], greedy_warp(root / "negated.nii.gz", pair["moving_seg"], pair["fixed"],
                                               root / "bad.nii.gz")) < 0.95


def test_read_back_and_warp_through_any_format(pair: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """ITK / Greedy files read back to our field; ``dirbench warp`` gives the same result from every format."""
    root = pair["root"]
    results = {}
    for fmt in ("dirbench", "itk", "greedy"):
        field = root / f"rt_{fmt}.nii.gz"
        save_field(field, pair["u"], pair["a_f"], fmt)
        back = load_field(field)
        np.testing.assert_allclose(back.disp, pair["u"], atol=1e-4)
        assert np.allclose(back.affine, pair["a_f"])
        assert main(["export", "--disp", str(field), "--format", "dirbench", "--out", str(root / "back.nii.gz")]) == 0
        np.testing.assert_allclose(load_field(root / "back.nii.gz").disp, pair["u"], atol=1e-4)
        out = root / f"warped_{fmt}.nii.gz"
        code = main(["warp", "--disp", str(field), "--image", str(pair["moving_seg"]), "--out", str(out), "--labels"])
        assert code == 0
        results[fmt] = np.asarray(nib.load(str(out)).dataobj)
        assert np.allclose(nib.load(str(out)).affine, pair["a_f"])
    assert agreement(results["dirbench"], pair["ours"]) == 1.0
    assert agreement(results["itk"], pair["ours"]) >= 0.999
    assert np.array_equal(results["itk"], results["greedy"])
    # Linear interpolation of an image: a float32 image on the displacement's grid.
    code = main(["warp", "--disp", str(pair["disp"]), "--image", str(pair["fixed"]), "--out", str(root / "lin.nii.gz")])
    assert code == 0 and nib.load(str(root / "lin.nii.gz")).get_data_dtype() == np.float32


def test_bad_fields_are_one_line_errors(pair: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    field = nib.Nifti1Image(np.zeros((4, 4, 4, 1, 3), np.float32), np.eye(4))
    nib.save(field, str(tmp_path / "no_intent.nii.gz"))
    with pytest.raises(UserError, match=r"no_intent\.nii\.gz: 5-D field with intent code 0"):
        load_field(tmp_path / "no_intent.nii.gz")
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(UserError, match="shear"):
        save_field(tmp_path / "s.nii.gz", np.zeros((4, 4, 4, 3), np.float32), sheared, "itk")
    (tmp_path / "text.nii.gz").write_text("not a nifti")
    assert main(["export", "--disp", str(tmp_path / "text.nii.gz"), "--format", "itk",
                 "--out", str(tmp_path / "o.nii.gz")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "text.nii.gz" in err and not (tmp_path / "o.nii.gz").exists()
    assert main(["export", "--disp", str(pair["disp"]), "--format", "itk", "--out", str(tmp_path / "o.mha")]) == 1
    assert "o.mha: a displacement field is written as NIfTI" in capsys.readouterr().err
