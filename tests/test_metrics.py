"""dirbench.metrics on analytic fixtures: answers known in advance (spec/evaluation-and-data.md §11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dirbench import metrics as M
from dirbench.metrics import surface
from scipy import ndimage as ndi

SHAPE = (32, 32, 32)


def cube(lo: int = 8, hi: int = 20, shape=SHAPE, label: int = 1, shift=(0, 0, 0)) -> np.ndarray:
    seg = np.zeros(shape, np.int32)
    seg[tuple(slice(lo + s, hi + s) for s in shift)] = label
    return seg


def constant_field(t, shape=SHAPE) -> np.ndarray:
    return np.broadcast_to(np.asarray(t, np.float32), (*shape, 3)).copy()


def smooth_field(rng: np.random.Generator, amp: float, sigma: float = 1.5, shape=SHAPE) -> np.ndarray:
    u = np.stack([ndi.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)], axis=-1)
    return (u / u.std() * amp).astype(np.float32)


# --------------------------------------------------------------------------- labels


def test_label_sets_and_parser():
    assert M.parse_labels("oasis") == list(range(1, 36))
    lumir = M.parse_labels("lumir")
    assert len(lumir) == 133 and lumir[:8] == [0, 4, 11, 23, 30, 31, 32, 35]
    assert lumir[-3:] == [205, 206, 207] and len(set(lumir)) == 133
    assert M.parse_labels("1,2,5-9") == [1, 2, 5, 6, 7, 8, 9]
    assert M.parse_labels(" 3 , 10 - 11 ") == [3, 10, 11]
    assert M.parse_labels([4, 2]) == [4, 2]
    for bad in ("1,x", "5-3", "1,1", "", "1,,2"):
        with pytest.raises(ValueError):  # the CLI words it with the flag (test_evaluate_cli)
            M.parse_labels(bad)


# --------------------------------------------------------------------------- warp


def test_warp_zero_field_is_identity_and_integer_translation_shifts(rng):
    moving = rng.integers(0, 9, SHAPE).astype(np.int16)
    assert np.array_equal(M.warp_labels(moving, np.zeros((*SHAPE, 3), np.float32)), moving)
    warped = M.warp_labels(moving, constant_field((2, -1, 3)))
    expected = np.zeros_like(moving)
    expected[:-2, 1:, :-3] = moving[2:, :-1, 3:]  # warped(x) = moving(x + t), 0 outside
    assert warped.dtype == moving.dtype and np.array_equal(warped, expected)


def test_warp_matches_map_coordinates_on_ties_borders_and_tiny_values(rng):
    moving = rng.integers(1, 50, (9, 11, 13)).astype(np.int32)
    special = np.array(
        [0.5, -0.5, 1.5, -2.5, 0.49999997, -0.49999997, 0.50000006, 1e-30, -1e-30, 1e-8, -1e-8, 0.0, -0.0,
         8.0, -8.0, 8.5, 12.0, 12.5, 3e-7, -3e-7, 1e10, -1e10], np.float32)  # fmt: skip
    coords0 = np.indices(moving.shape)
    for trial in range(6):
        u = rng.choice(special, (*moving.shape, 3)) if trial % 2 else rng.normal(0, 4, (*moving.shape, 3))
        u = u.astype(np.float32)
        expected = ndi.map_coordinates(moving, coords0 + np.moveaxis(u, -1, 0).astype(np.float64), order=0)
        assert np.array_equal(M.warp_labels(moving, u), expected)
        assert np.array_equal(M.warp_labels(moving, np.moveaxis(u, -1, 0)), expected)  # [3, X, Y, Z]
        u64 = u.astype(np.float64) + 1e-3 * rng.standard_normal(u.shape)  # float64 fields: literal path
        expected64 = ndi.map_coordinates(moving, coords0 + np.moveaxis(u64, -1, 0), order=0)
        assert np.array_equal(M.warp_labels(moving, u64), expected64)


# --------------------------------------------------------------------------- Dice and HD95


def test_identical_masks_give_hd95_zero_and_dice_one():
    seg = cube() + cube(22, 28, label=2)
    assert np.array_equal(M.compute_hd95(seg, seg, seg, [1, 2]), [0.0, 0.0])
    assert np.array_equal(M.compute_dice(seg, seg, seg, [1, 2]), [1.0, 1.0])


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_cube_shifted_by_k_voxels_has_hd95_k(k, axis):
    shift = [0, 0, 0]
    shift[axis] = k
    fixed, warped = cube(), cube(shift=tuple(shift))
    assert M.compute_hd95(fixed, fixed, warped, [1]) == pytest.approx([float(k)], abs=0)
    side = 12
    assert M.compute_dice(fixed, fixed, warped, [1])[0] == 2 * (side - k) * side * side / (2 * side**3)


def test_vanished_label_gives_inf_and_zero_dice_absent_label_gives_nan():
    fixed = cube() + cube(22, 26, label=2)
    moving = fixed.copy()
    warped = cube()  # label 2 vanished after warping
    labels = [1, 2, 3]  # 3 is absent from both
    assert np.array_equal(M.compute_hd95(fixed, moving, warped, labels), [0.0, math.inf, np.nan], equal_nan=True)
    assert np.array_equal(M.compute_dice(fixed, moving, warped, labels), [1.0, 0.0, np.nan], equal_nan=True)
    moving_without_1 = np.where(moving == 1, 0, moving)  # present in fixed, absent in moving: NaN too
    assert np.isnan(M.compute_dice(fixed, moving_without_1, warped, [1])[0])
    assert np.isnan(M.compute_hd95(fixed, moving_without_1, warped, [1])[0])


def test_field_pushing_everything_out_vanishes_every_label():
    fixed = cube() + cube(22, 26, label=2)
    warped = M.warp_labels(fixed, constant_field((40, 0, 0)))
    assert not warped.any()
    assert np.array_equal(M.compute_hd95(fixed, fixed, warped, [1, 2]), [math.inf, math.inf])
    assert np.array_equal(M.compute_dice(fixed, fixed, warped, [1, 2]), [0.0, 0.0])


def test_surfel_areas_analytic_values():
    table = M.surfel_area_table()
    assert table[0] == table[255] == 0.0
    assert table[1] == pytest.approx(math.sqrt(3) / 8)  # one corner cut off
    assert table[0b11110000] == 1.0  # a flat face between two planes of voxels
    assert table[0b11000000] == pytest.approx(math.sqrt(2) / 2)  # an edge
    assert table[0b10001110] == pytest.approx(3 * math.sqrt(3) / 4)  # corner + 3 neighbours: hexagon
    assert np.array_equal(table, table[255 - np.arange(256)])  # inside/outside symmetric
    scaled = M.surfel_area_table((2.0, 2.0, 2.0))
    assert np.allclose(scaled, 4 * table, rtol=1e-15)
    assert M.surfel_area_table((1.0, 2.0, 3.0))[0b11110000] == pytest.approx(6.0)  # face ⟂ axis 0: s1·s2


def test_hd95_anisotropic_shift_along_axis_scales_with_spacing():
    fixed, warped = cube(), cube(shift=(0, 0, 2))
    assert M.compute_hd95(fixed, fixed, warped, [1], spacing=(1.0, 1.0, 1.5))[0] == pytest.approx(3.0)


def test_hd95_fast_path_equals_exact_edt_path(monkeypatch, rng):
    fixed = (ndi.gaussian_filter(rng.random(SHAPE), 2) * 60).astype(np.int32) % 5
    warped = np.roll(fixed, 2, axis=1)
    warped[ndi.gaussian_filter(rng.random(SHAPE), 1) > 0.55] = 4
    labels = [0, 1, 2, 3, 4]
    fast = M.compute_hd95(fixed, fixed, warped, labels)

    def undetermined(*args, **kwargs):
        raise surface._Undetermined

    monkeypatch.setattr(surface, "_directed_fast", undetermined)
    assert np.array_equal(M.compute_hd95(fixed, fixed, warped, labels), fast)




# --------------------------------------------------------------------------- Jacobians


def test_zero_field_and_integer_translation_have_no_folds():
    mask = np.zeros(SHAPE, bool)
    mask[4:28, 4:28, 4:28] = True
    for field in (np.zeros((*SHAPE, 3), np.float32), constant_field((2, -1, 3))):
        # log(1 + 3) everywhere; np.std of a constant array is 0 up to the rounding of its mean
        assert M.compute_sdlogj(field) == pytest.approx(0.0, abs=1e-15)
        assert M.compute_sdlogj_raw(field) == 0.0
        assert M.compute_ndv(field, mask) == 0.0 and M.compute_ndv(field) == 0.0
        assert M.compute_nondiff_voxels(field, mask) == 0.0
        assert np.array_equal(M.jacobian_determinant(field), np.ones((28, 28, 28)))


def test_checkerboard_folded_voxel_keeps_central_jacobian_but_has_ndv():
    field = np.zeros((*SHAPE, 3), np.float32)
    v = (16, 16, 16)
    field[v] = (1.6, 1.6, 1.6)  # the centre voxel jumps past its neighbours, which stay put
    assert M.jacobian_determinant(field)[tuple(c - 2 for c in v)] == 1.0  # central differences skip v
    only_v = np.zeros(SHAPE, bool)
    only_v[v] = True
    assert M.compute_nondiff_voxels(field, only_v) == 0.0
    # At v, with w = 1.6·(1, 1, 1): corner tetrahedron rows e_a - s_a w give det 1 - 1.6 Σ s_a, i.e.
    # -3.8 (once), -0.6 (3×), 2.6 (3×), 5.8 (once); J*1 = 6.8, J*2 = 2 (1 - 1.6 · 1.5) = -2.8.
    # NDV(v) = (3.8 + 3 · 0.6 + 2.8) / 12 = 0.7 of a voxel.
    assert M.compute_ndv(field, only_v) == pytest.approx(70.0, rel=1e-6)
    assert M.compute_ndv(field) > 0


def test_ndv_of_a_point_reflection_counts_every_tetrahedron():
    # φ(x) = c - x: every corner tetrahedron has det -1 and both central ones det -2, so each voxel
    # contributes (8 + 2 + 2) / 12 = 1: NDV = 100 %, and every central |J| is -1
    idx = np.stack(np.indices(SHAPE), axis=-1).astype(np.float32)
    field = -2 * idx + (np.array(SHAPE, np.float32) - 1)  # φ = c - x
    assert M.compute_ndv(field) == pytest.approx(100.0, rel=1e-12)
    assert M.compute_nondiff_voxels(field) == 100.0


def test_ndv_mask_helper():
    img = np.zeros(SHAPE, np.float32)
    img[5:9, 5:9, 5:9] = 3.0
    assert M.ndv_mask("none") is None
    assert np.array_equal(M.ndv_mask("moving", moving_image=img), img > 0)
    assert np.array_equal(M.ndv_mask("fixed", fixed_image=img, moving_image=None), img > 0)
    with pytest.raises(ValueError, match="needs the moving image"):
        M.ndv_mask("moving", fixed_image=img)
    with pytest.raises(ValueError, match="expected moving, fixed or none"):
        M.ndv_mask("brain")


def test_empty_mask_gives_nan():
    field = np.zeros((*SHAPE, 3), np.float32)
    empty = np.zeros(SHAPE, bool)
    assert math.isnan(M.compute_ndv(field, empty)) and math.isnan(M.compute_nondiff_voxels(field, empty))


# --------------------------------------------------------------------------- TRE


def blobs(centres, shape=SHAPE) -> np.ndarray:
    vol = np.zeros(shape, np.int16)
    for i, (x, y, z) in enumerate(centres, start=1):
        vol[x : x + 2, y : y + 2, z : z + 2] = i
    return vol


def test_tre_zero_field_translation_and_vanished_landmark():
    fixed = blobs([(4, 4, 4), (10, 20, 6), (25, 12, 18)])
    moving = blobs([(6, 5, 4), (12, 21, 6), (27, 13, 18)])  # every landmark moved by (2, 1, 0)
    zero = np.zeros((*SHAPE, 3), np.float32)
    assert M.compute_tre(fixed, moving, zero) == pytest.approx(math.sqrt(5))
    ids, errors = M.landmark_errors(fixed, moving, zero, spacing=(2.0, 1.0, 1.0))
    assert ids.tolist() == [1, 2, 3] and np.allclose(errors, math.sqrt(17))
    assert M.compute_tre(fixed, moving, constant_field((2, 1, 0))) == 0.0  # the field recovers them
    lost = moving.copy()
    lost[lost == 2] = 0
    assert math.isnan(M.compute_tre(fixed, lost, zero))


# --------------------------------------------------------------------------- one pair


def test_evaluate_pair_matches_the_single_metrics(rng):
    fixed = (ndi.gaussian_filter(rng.random(SHAPE), 2) * 50).astype(np.int32) % 6
    moving = np.roll(fixed, 1, axis=0)
    image = np.where(moving > 0, 100.0, 0.0).astype(np.float32)
    field = smooth_field(rng, 1.2)
    labels = [1, 2, 3, 4, 5, 7]
    res = M.evaluate_pair(field, fixed_seg=fixed, moving_seg=moving, labels=labels, moving_image=image)
    warped = M.warp_labels(moving, field)
    assert np.array_equal(res["dice"].items, M.compute_dice(fixed, moving, warped, labels), equal_nan=True)
    assert np.array_equal(res["hd95"].items, M.compute_hd95(fixed, moving, warped, labels), equal_nan=True)
    assert res["sdlogj"].value == M.compute_sdlogj(field)
    assert res["ndv"].value == M.compute_ndv(field, image > 0) and res["ndv"].value > 0
    assert res["nondiff_voxels"].value == M.compute_nondiff_voxels(field, image > 0)
    case = res.case_metrics()
    assert list(case) == ["dice", "hd95", "sdlogj", "ndv", "nondiff_voxels"]
    assert case["dice"] == float(np.nanmean(res["dice"].items)) and math.isnan(res["dice"].items[-1])

    quick = M.evaluate_pair(field, fixed_seg=fixed, moving_seg=moving, labels=labels, metrics={"dice"})
    assert quick.computed == ("dice",)
    assert np.array_equal(quick["dice"].items, res["dice"].items, equal_nan=True)
    with pytest.raises(ValueError, match="needs the moving image"):
        M.evaluate_pair(field, metrics={"ndv"})
    with pytest.raises(ValueError, match="unknown metric 'dsc'"):
        M.evaluate_pair(field, metrics={"dsc"})
