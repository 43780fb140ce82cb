"""dirbench.metrics against an independent, literal implementation (tests/metrics_reference.py).

Random smooth label maps (background 0 included) and rough random fields with folds, ≤ 40³. Dice,
HD95, warping, the fold count and TRE must be identical; SDlogJ and NDV agree to 1e-6 relative (the
Learn2Reg |J| even bit for bit). Optional: the PyPI packages ``surface-distance`` (DeepMind) and
``digital-diffeomorphism`` (Liu et al.), when installed.
"""

from __future__ import annotations

import math

import metrics_reference as ref
import numpy as np
import pytest
from dirbench import metrics as M
from scipy import ndimage as ndi

SHAPE = (28, 32, 26)


def random_labels(rng: np.random.Generator, n: int = 7, shape=SHAPE) -> np.ndarray:
    """Smooth random regions (values 0..n-1) inside a box, background 0 around it."""
    field = ndi.gaussian_filter(rng.random(shape), 2.0)
    seg = np.digitize(field, np.quantile(field, np.linspace(0, 1, n + 1)[1:-1])).astype(np.int32)
    seg[:2] = 0
    seg[:, -3:] = 0
    return seg


def rough_field(rng: np.random.Generator, amp: float, sigma: float, shape=SHAPE) -> np.ndarray:
    u = np.stack([ndi.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)], axis=-1)
    return (u / u.std() * amp).astype(np.float32)


@pytest.fixture(params=[0, 1, 2])
def case(request):
    rng = np.random.default_rng(100 + request.param)
    fixed = random_labels(rng)
    moving = random_labels(rng)
    moving[moving == 5] = 0  # label 5 absent from the moving segmentation: NaN
    field = rough_field(rng, amp=(0.8, 1.5, 2.5)[request.param], sigma=1.2)
    image = np.where(ndi.binary_erosion(moving > 0, iterations=2), 50.0, 0.0).astype(np.float32)
    return fixed, moving, field, image


LABELS = [0, 1, 2, 3, 4, 5, 6, 9]  # 9 absent everywhere


def test_warp_dice_hd95_identical(case):
    fixed, moving, field, _ = case
    warped = M.warp_labels(moving, field)
    assert np.array_equal(warped, ref.warp_labels(moving, field))
    warped[warped == 3] = 0  # force a vanished label: HD95 inf, Dice 0
    expected_dice = ref.dice(fixed, moving, warped, LABELS)
    expected_hd = ref.hd95(fixed, moving, warped, LABELS)
    assert np.array_equal(M.compute_dice(fixed, moving, warped, LABELS), expected_dice, equal_nan=True)
    assert np.array_equal(M.compute_hd95(fixed, moving, warped, LABELS), expected_hd, equal_nan=True)
    assert np.isnan(expected_hd[[5, 7]]).all() and expected_hd[3] == math.inf and expected_dice[3] == 0.0
    assert np.isfinite(expected_hd[[0, 1, 2, 4, 6]]).all()


def test_hd95_identical_when_distances_exceed_the_bounded_search():
    fixed = np.zeros((40, 40, 40), np.int32)
    fixed[2:8, 3:9, 2:7] = 1
    warped = np.zeros_like(fixed)
    warped[30:38, 28:37, 31:39] = 1  # every surface distance is > 11 voxels: exact fall-back path
    warped[20:22, 4:6, 3:5] = 1
    assert np.array_equal(M.compute_hd95(fixed, fixed, warped, [1]), ref.hd95(fixed, fixed, warped, [1]))


def test_surfel_area_table_matches_the_closed_forms():
    assert np.allclose(M.surfel_area_table(), ref.area_table_unit(), rtol=1e-15, atol=0)


def test_jacobian_sdlogj_identical_and_folds_ndv_agree(case):
    _, _, field, image = case
    mask = image > 0
    assert np.array_equal(M.jacobian_determinant(field), ref.jacobian_l2r(field))
    assert M.compute_sdlogj(field) == pytest.approx(ref.sdlogj(field), rel=1e-6)
    assert M.compute_sdlogj_raw(field) == pytest.approx(ref.sdlogj_raw(field), rel=1e-6)
    expected_ndv = ref.ndv(field, mask)
    assert expected_ndv > 0  # the rough fields fold
    assert M.compute_ndv(field, mask) == pytest.approx(expected_ndv, rel=1e-6)
    assert M.compute_ndv(field) == pytest.approx(ref.ndv(field, None), rel=1e-6)
    assert M.compute_nondiff_voxels(field, mask) == ref.nondiff_voxels(field, mask)
    assert M.compute_nondiff_voxels(field) == ref.nondiff_voxels(field, None)


def test_ndv_float64_field_agrees(case):
    _, _, field, image = case
    u64 = field.astype(np.float64) * (1 + 1e-9)
    assert M.compute_ndv(u64, image > 0) == pytest.approx(ref.ndv(u64, image > 0), rel=1e-6)


def test_evaluate_pair_agrees_with_reference(case):
    fixed, moving, field, image = case
    res = M.evaluate_pair(field, fixed_seg=fixed, moving_seg=moving, labels=LABELS, moving_image=image)
    warped = ref.warp_labels(moving, field)
    assert np.array_equal(res["dice"].items, ref.dice(fixed, moving, warped, LABELS), equal_nan=True)
    assert np.array_equal(res["hd95"].items, ref.hd95(fixed, moving, warped, LABELS), equal_nan=True)
    assert res["sdlogj"].value == pytest.approx(ref.sdlogj(field), rel=1e-6)
    assert res["ndv"].value == pytest.approx(ref.ndv(field, image > 0), rel=1e-6)


def test_tre_identical(case):
    rng = np.random.default_rng(7)
    _, _, field, _ = case
    fixed_lms = np.zeros(SHAPE, np.int16)
    moving_lms = np.zeros(SHAPE, np.int16)
    for i in range(1, 9):
        for vol in (fixed_lms, moving_lms):
            x, y, z = (rng.integers(3, n - 5) for n in SHAPE)
            vol[x : x + rng.integers(1, 3), y : y + 2, z : z + rng.integers(1, 4)] = i
    expected = ref.tre(fixed_lms, moving_lms, field)
    assert M.compute_tre(fixed_lms, moving_lms, field) == expected or (
        math.isnan(expected) and math.isnan(M.compute_tre(fixed_lms, moving_lms, field))
    )
    zero = np.zeros_like(field)
    assert M.compute_tre(fixed_lms, moving_lms, zero, spacing=(1.0, 2.0, 1.0)) == ref.tre(
        fixed_lms, moving_lms, zero, spacing=np.array([1.0, 2.0, 1.0])
    )


# --------------------------------------------------------------------------- optional PyPI packages


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # its scipy.ndimage.filters imports
def test_against_deepmind_surface_distance(monkeypatch, case):
    sd = pytest.importorskip("surface_distance")
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)  # the packaged copy predates numpy 2
    lookup = pytest.importorskip("surface_distance.lookup_tables")
    table = lookup.create_table_neighbour_code_to_surface_area
    assert np.array_equal(M.surfel_area_table(), table((1, 1, 1)))
    spacing = (1.0, 2.0, 0.5)
    assert np.allclose(M.surfel_area_table(spacing), table(spacing), rtol=1e-15)
    fixed, moving, field, _ = case
    warped = M.warp_labels(moving, field)
    for sp in ((1.0, 1.0, 1.0), spacing):
        ours = M.compute_hd95(fixed, moving, warped, LABELS[:5], spacing=sp)
        surfaces = [sd.compute_surface_distances(fixed == k, warped == k, np.array(sp)) for k in LABELS[:5]]
        theirs = [sd.compute_robust_hausdorff(s, 95.0) for s in surfaces]
        assert np.array_equal(ours, theirs)


def test_against_digital_diffeomorphism_package(case):
    dd = pytest.importorskip("digital_diffeomorphism")
    _, _, field, image = case
    # the package edge-pads the field instead of cropping: compare on a mask away from the border
    mask = np.zeros(SHAPE, bool)
    mask[1:-1, 1:-1, 1:-1] = image[1:-1, 1:-1, 1:-1] > 0
    out = dd.ndv(field.copy(), mask=mask.astype(np.float32), is_disp=True)
    assert M.compute_ndv(field, mask) == pytest.approx(float(out[1]), rel=1e-4)  # the package runs in float32
    assert M.compute_nondiff_voxels(field, mask) == pytest.approx(float(out[4]), rel=1e-6)
