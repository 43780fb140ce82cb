"""Greedy baseline (methods.greedy): subprocess wrapper, LPS-mm warp → voxel displacement, errors.

The conversion is checked against Greedy's own reslicer (``greedy -r``) on deformed phantoms and against
hand-computed voxel shifts for the OASIS LIA affine (evaluation-and-data.md §7.2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, map_coordinates

from methods.greedy import (
    GreedyConfig,
    GreedyError,
    build_command,
    greedy_warp_to_disp,
    register_pair,
    run_greedy,
)

# OASIS (neurite / L2R-2021) geometry: LIA+, 1 mm (evaluation-and-data.md §7.2).
LIA = np.array([[-1.0, 0, 0, 80], [0, 0, 1, -112], [0, -1, 0, 96], [0, 0, 0, 1]])
RAS = np.eye(4)
SHAPE = (32, 36, 40)
# Few iterations for speed; -noise 0 makes Greedy's NCC deterministic.
FAST = GreedyConfig(iterations="30x15", threads=1, extra_args=("-noise", "0"))
GREEDY = str(Path(sys.executable).with_name("greedy"))


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    if data.ndim == 5:
        img.header.set_intent("vector")  # as Greedy writes its warps; ITK ignores a 5-D warp without it
    nib.save(img, str(path))
    return path


def _pull(moving: np.ndarray, disp: np.ndarray, order: int) -> np.ndarray:
    """warped(x) = moving(x + disp(x)) with scipy (the harness / L2R convention), on disp's grid."""
    grid = np.indices(disp.shape[:3], dtype=np.float64)
    coords = grid + np.moveaxis(disp, -1, 0)
    return map_coordinates(moving, coords, order=order, mode="constant", cval=0)


def _phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Moving image and 4-label segmentation of ellipsoids, away from the border."""
    x = np.indices(SHAPE, dtype=np.float64)
    seg = np.zeros(SHAPE, np.int16)
    blobs = [((16, 18, 20), (9, 11, 12)), ((11, 12, 14), (3, 4, 4)), ((21, 24, 26), (4, 5, 4)),
             ((15, 25, 13), (3, 3, 5))]
    for label, (centre, radii) in enumerate(blobs, start=1):
        r2 = sum(((x[k] - centre[k]) / radii[k]) ** 2 for k in range(3))
        seg[r2 <= 1] = label
    intensity = np.array([0.0, 0.4, 1.0, 0.7, 0.2])[seg]
    image = gaussian_filter(intensity, 1.0) + 0.02 * gaussian_filter(rng.standard_normal(SHAPE), 1.0)
    return image.astype(np.float32), seg


def _deformed_pair(tmp_path: Path, affine: np.ndarray, rng: np.random.Generator) -> dict[str, Path]:
    """Fixed = moving pulled through a smooth random field (max 5 voxels); all written with ``affine``."""
    mov_img, mov_seg = _phantom(rng)
    field = np.stack([gaussian_filter(rng.standard_normal(SHAPE), 4.0) for _ in range(3)], axis=-1)
    field *= 5.0 / np.abs(field).max()
    fix_img = _pull(mov_img, field, order=1).astype(np.float32)
    fix_seg = _pull(mov_seg, field, order=0).astype(np.int16)
    return {
        "fixed": _save(tmp_path / "fixed.nii.gz", fix_img, affine),
        "moving": _save(tmp_path / "moving.nii.gz", mov_img, affine),
        "fixed_seg": _save(tmp_path / "fixed_seg.nii.gz", fix_seg, affine),
        "moving_seg": _save(tmp_path / "moving_seg.nii.gz", mov_seg, affine),
    }


def _greedy_reslice(fixed: Path, moving_seg: Path, warp: Path, out: Path) -> np.ndarray:
    """Greedy's own nearest-neighbour reslicing of ``moving_seg`` through ``warp``."""
    cmd = [GREEDY, "-d", "3", "-rf", str(fixed), "-ri", "NN", "-rm", str(moving_seg), str(out),
           "-r", str(warp)]  # -ri applies to the pairs after it
    subprocess.run(cmd, check=True, capture_output=True)
    return np.asarray(nib.load(str(out)).dataobj).astype(np.int16)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of the union of the two foregrounds where the labels agree."""
    union = (a > 0) | (b > 0)
    return float((a[union] == b[union]).mean())


def _mean_dice(fixed: np.ndarray, warped: np.ndarray) -> float:
    labels = [lab for lab in np.unique(fixed) if lab > 0]
    return float(np.mean([2 * ((fixed == lab) & (warped == lab)).sum() / ((fixed == lab).sum()
                                                                        + (warped == lab).sum())
                          for lab in labels]))


@pytest.mark.parametrize("affine", [LIA, RAS], ids=["LIA", "RAS"])
def test_conversion_matches_greedy_reslicing(tmp_path: Path, rng: np.random.Generator,
                                             affine: np.ndarray) -> None:
    files = _deformed_pair(tmp_path, affine, rng)
    warp = run_greedy(files["fixed"], files["moving"], tmp_path / "warp.nii.gz", FAST)
    disp = greedy_warp_to_disp(warp, affine)
    assert disp.shape == (*SHAPE, 3) and disp.dtype == np.float32
    assert np.abs(disp).max() > 1.0  # a real deformation, not a near-identity that agrees trivially

    moving_seg = np.asarray(nib.load(str(files["moving_seg"])).dataobj)
    ours = _pull(moving_seg, disp, order=0)
    theirs = _greedy_reslice(files["fixed"], files["moving_seg"], warp, tmp_path / "resliced.nii.gz")
    assert _agreement(ours, theirs) >= 0.995

    # The check discriminates: reading Greedy's warp as RAS mm instead of LPS mm breaks the agreement.
    as_ras = np.asarray(nib.load(str(warp)).dataobj)[:, :, :, 0, :] @ np.linalg.inv(affine[:3, :3]).T
    assert _agreement(_pull(moving_seg, as_ras, order=0), theirs) < 0.95


def test_translation_lia_voxel_shift(tmp_path: Path) -> None:
    """A constant Greedy warp of (1, 2, 3) mm LPS under the OASIS LIA affine is the voxel shift (1, −3, −2).

    By hand: LPS (1, 2, 3) = RAS (−1, −2, 3); the LIA columns send voxel axes 0, 1, 2 to RAS −x, −z, +y, so
    RAS (−1, −2, 3) = 1·(−x) − 3·(−z) − 2·(+y) → u = (1, −3, −2). Greedy's reslicer must agree exactly.
    """
    warp_data = np.zeros((*SHAPE, 1, 3), np.float32)
    warp_data[..., 0, :] = (1.0, 2.0, 3.0)
    warp = _save(tmp_path / "warp.nii.gz", warp_data, LIA)
    disp = greedy_warp_to_disp(warp, LIA)
    np.testing.assert_allclose(disp, np.broadcast_to(np.float32([1, -3, -2]), disp.shape), atol=1e-5)

    seg = np.zeros(SHAPE, np.int16)
    seg[10:15, 12:20, 8:12] = 1
    seg[20:22, 25:28, 30:33] = 2
    seg_path = _save(tmp_path / "seg.nii.gz", seg, LIA)
    theirs = _greedy_reslice(seg_path, seg_path, warp, tmp_path / "resliced.nii.gz")
    expected = np.zeros_like(seg)  # expected(x) = seg(x + (1, -3, -2))
    expected[9:14, 15:23, 10:14] = 1
    expected[19:21, 28:31, 32:35] = 2
    np.testing.assert_array_equal(theirs, expected)
    np.testing.assert_array_equal(_pull(seg, disp, order=0), expected)


def test_translation_recovered_by_registration(tmp_path: Path, rng: np.random.Generator) -> None:
    """Fixed = moving shifted by t = (2, −3, 1) voxels under LIA; Greedy + conversion recover u ≈ t."""
    mov_img, _ = _phantom(rng)
    shift = np.array([2.0, -3.0, 1.0])
    fix_img = _pull(mov_img, np.broadcast_to(shift, (*SHAPE, 3)), order=1).astype(np.float32)
    fixed = _save(tmp_path / "fixed.nii.gz", fix_img, LIA)
    moving = _save(tmp_path / "moving.nii.gz", mov_img, LIA)
    warp = run_greedy(fixed, moving, tmp_path / "warp.nii.gz", GreedyConfig(
        metric="SSD", metric_radius=None, iterations="60x40", threads=1, warp_precision=0))
    disp = greedy_warp_to_disp(warp, LIA)
    core = disp[10:22, 12:24, 14:26].reshape(-1, 3)
    np.testing.assert_allclose(np.median(core, axis=0), shift, atol=0.5)


def test_moving_affine_differs(tmp_path: Path) -> None:
    """Moving grid with 2 mm voxels, offset (5.5, 0.5, −0.5) mm; warp +4 mm along z: u = inv(A_m)·(A_f·x + d) − x.

    The offsets put every sample at a quarter voxel, so nearest-neighbour has no ties; Greedy must agree.
    """
    moving_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    moving_aff[:3, 3] = (5.5, 0.5, -0.5)
    warp_data = np.zeros((*SHAPE, 1, 3), np.float32)
    warp_data[..., 0, 2] = 4.0  # +4 mm along z (the same in LPS and RAS)
    warp = _save(tmp_path / "warp.nii.gz", warp_data, RAS)
    disp = greedy_warp_to_disp(warp, RAS, moving_aff)
    x = np.moveaxis(np.indices(SHAPE, dtype=np.float64), 0, -1)
    np.testing.assert_allclose(disp, (x + np.array([-5.5, -0.5, 4.5])) / 2.0 - x, atol=1e-5)

    seg = np.zeros((16, 18, 20), np.int16)
    seg[3:9, 4:10, 2:7] = 1
    seg[10:14, 11:16, 12:18] = 2
    seg_path = _save(tmp_path / "seg.nii.gz", seg, moving_aff)
    fixed = _save(tmp_path / "fixed.nii.gz", np.zeros(SHAPE, np.float32), RAS)
    theirs = _greedy_reslice(fixed, seg_path, warp, tmp_path / "resliced.nii.gz")
    assert (theirs > 0).sum() > 1000
    np.testing.assert_array_equal(_pull(seg, disp, order=0), theirs)


def test_register_pair_improves_dice_and_writes_file(tmp_path: Path, rng: np.random.Generator) -> None:
    files = _deformed_pair(tmp_path, LIA, rng)
    out = tmp_path / "out" / "disp_fixed_moving.nii.gz"
    log = tmp_path / "logs" / "greedy.log"
    disp = register_pair(files["fixed"], files["moving"], out, FAST, workdir=tmp_path, log=log)

    saved = nib.load(str(out))
    assert saved.shape == (*SHAPE, 3) and saved.get_data_dtype() == np.float32
    np.testing.assert_array_equal(saved.affine, LIA)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), disp)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp file left
    assert not list(tmp_path.glob("greedy-*"))  # Greedy's work folder removed
    assert "-m WNCC 2x2x2" in log.read_text() and "LEVEL 2 of 2" in log.read_text()

    # Deterministic with -noise 0: the same as running Greedy and converting by hand.
    warp = run_greedy(files["fixed"], files["moving"], tmp_path / "warp.nii.gz", FAST)
    np.testing.assert_array_equal(disp, greedy_warp_to_disp(warp, LIA))

    fixed_seg = np.asarray(nib.load(str(files["fixed_seg"])).dataobj)
    moving_seg = np.asarray(nib.load(str(files["moving_seg"])).dataobj)
    before = _mean_dice(fixed_seg, moving_seg)
    after = _mean_dice(fixed_seg, _pull(moving_seg, disp, order=0))
    assert after > before + 0.05, (before, after)


def test_default_command_is_the_reference() -> None:
    """Default config = Jena et al.'s command (methods-dp.md §5): -m WNCC 2x2x2 -n 100x100x40 -s 1.5mm 0.5mm."""
    cmd = build_command("f.nii.gz", "m.nii.gz", "w.nii.gz", GreedyConfig())
    assert cmd == ["greedy", "-d", "3", "-i", "f.nii.gz", "m.nii.gz", "-o", "w.nii.gz",
                   "-m", "WNCC", "2x2x2", "-n", "100x100x40", "-s", "1.5mm", "0.5mm"]
    cmd = build_command("f", "m", "w", GreedyConfig(metric="SSD", metric_radius=None, threads=4,
                                                    warp_precision=0, extra_args=("-noise", "0")))
    assert cmd[8:] == ["-m", "SSD", "-n", "100x100x40", "-s", "1.5mm", "0.5mm", "-threads", "4",
                       "-wp", "0", "-noise", "0"]


def test_config_roundtrip_and_validation() -> None:
    cfg = GreedyConfig(iterations="20x10", smoothing=("2vox", "1vox"), threads=2, extra_args=("-noise", "0"))
    data = cfg.to_dict()
    assert data["smoothing"] == ["2vox", "1vox"] and data["extra_args"] == ["-noise", "0"]
    assert GreedyConfig.from_dict(data) == cfg
    assert GreedyConfig.from_dict({}) == GreedyConfig()
    with pytest.raises(ValueError, match="unknown key"):
        GreedyConfig.from_dict({"iters": "1x1"})
    with pytest.raises(ValueError, match="unknown metric 'FOO'"):
        GreedyConfig(metric="FOO")
    with pytest.raises(ValueError, match="needs a radius"):
        GreedyConfig(metric="NCC", metric_radius=None)
    with pytest.raises(ValueError, match="threads"):
        GreedyConfig(threads=0)


def test_missing_input_names_file(tmp_path: Path) -> None:
    fixed = _save(tmp_path / "fixed.nii.gz", np.zeros(SHAPE, np.float32), LIA)
    missing = tmp_path / "nope" / "moving.nii.gz"
    with pytest.raises(GreedyError, match=r"moving image .*nope/moving\.nii\.gz.*file not found"):
        run_greedy(fixed, missing, tmp_path / "warp.nii.gz", FAST)
    with pytest.raises(GreedyError, match="fixed image"):
        register_pair(missing, fixed, tmp_path / "disp.nii.gz", FAST)
    assert not (tmp_path / "disp.nii.gz").exists()
    with pytest.raises(GreedyError, match="executable '/no/such/greedy' not found"):
        run_greedy(fixed, fixed, tmp_path / "warp.nii.gz", GreedyConfig(executable="/no/such/greedy"))


def test_greedy_error_carries_greedy_message(tmp_path: Path) -> None:
    fixed = _save(tmp_path / "fixed.nii.gz", np.zeros(SHAPE, np.float32), LIA)
    bad = GreedyConfig(metric="NCC", metric_radius="two", iterations="2")
    log = tmp_path / "greedy.log"
    with pytest.raises(GreedyError) as info:
        run_greedy(fixed, fixed, tmp_path / "warp.nii.gz", bad, log=log)
    message = str(info.value)
    assert str(fixed) in message and "exit 1" in message
    assert "Expected an integer vector delimited by 'x' as parameter to '-m'" in message
    assert "Expected an integer vector" in log.read_text()


@pytest.mark.parametrize(("args", "expected"), [
    (["-d", "3", "--bogus"], "greedy: error: Unknown parameter --bogus"),
    (["-d", "7"], "greedy: error: -d must be 2 or 3, got '7'"),
])
def test_console_script_bad_argument(args: list[str], expected: str) -> None:
    proc = subprocess.run([GREEDY, *args], capture_output=True, text=True)
    assert proc.returncode == 1
    assert expected in proc.stderr


def test_converter_rejects_bad_warp(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[X, Y, Z, 1, 3\]"):
        greedy_warp_to_disp(nib.Nifti1Image(np.zeros((*SHAPE, 3), np.float32), LIA), LIA)
    with pytest.raises(ValueError, match="differs from the fixed affine"):
        greedy_warp_to_disp(nib.Nifti1Image(np.zeros((*SHAPE, 1, 3), np.float32), LIA), RAS)
