"""Ground-truth metrics (``dirbench.metrics.ground_truth``): EPE and the inverse-consistency error, in mm.

Analytic fixtures (zero, constant and affine fields, whose answers are known in advance) plus a second,
literal implementation of the IC error through ``methods.spatial.compose`` (torch ``grid_sample``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dirbench import metrics as M
from scipy import ndimage as ndi

from methods.spatial import compose

SHAPE = (20, 24, 16)
SPACING = (1.0, 1.5, 2.0)


def constant_field(t, shape=SHAPE) -> np.ndarray:
    return np.broadcast_to(np.asarray(t, np.float32), (*shape, 3)).copy()


def smooth_field(rng: np.random.Generator, amp: float, shape=SHAPE) -> np.ndarray:
    u = np.stack([ndi.gaussian_filter(rng.standard_normal(shape), 2.0) for _ in range(3)], axis=-1)
    return (u / u.std() * amp).astype(np.float32)


def box_mask(shape=SHAPE, margin: int = 5) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[margin:-margin, margin:-margin, margin:-margin] = True
    return mask


def affine_field(matrix: np.ndarray, shape=SHAPE) -> np.ndarray:
    """``u(x) = A (x - c)`` with c the grid centre: ``[*shape, 3]`` float64."""
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.array(shape) - 1) / 2
    rel = grid - centre.reshape(3, 1, 1, 1)
    return np.einsum("ij,j...->...i", matrix, rel)


# --------------------------------------------------------------------------- EPE


def test_epe_of_the_true_field_is_zero(rng):
    truth = smooth_field(rng, 2.0)
    assert M.compute_epe(truth, truth) == 0.0
    assert M.compute_epe(truth, truth, box_mask(), SPACING) == 0.0


def test_epe_of_a_constant_offset_is_its_norm_in_mm(rng):
    truth = smooth_field(rng, 2.0)
    offset = np.array([0.5, -2.0, 1.25])
    disp = truth + offset.astype(np.float32)
    expected = math.sqrt((0.5 * 1.0) ** 2 + (2.0 * 1.5) ** 2 + (1.25 * 2.0) ** 2)
    assert M.compute_epe(disp, truth, spacing=SPACING) == pytest.approx(expected, rel=1e-6)
    assert M.compute_epe(disp, truth, box_mask(), SPACING) == pytest.approx(expected, rel=1e-6)
    assert M.compute_epe(disp, truth) == pytest.approx(np.linalg.norm(offset), rel=1e-6)  # 1 mm voxels
    # the zero field ("Initial") gives the mean true displacement
    zero = np.zeros_like(truth)
    assert M.compute_epe(zero, constant_field(offset), spacing=SPACING) == pytest.approx(expected)


def test_epe_averages_over_the_mask_only():
    truth = np.zeros((*SHAPE, 3), np.float32)
    disp = truth.copy()
    mask = box_mask()
    disp[~mask] = 7.0  # errors outside the mask do not count
    disp[mask, 0] = 1.0
    assert M.compute_epe(disp, truth, mask) == 1.0
    assert M.compute_epe(disp, truth) > 1.0
    assert math.isnan(M.compute_epe(disp, truth, np.zeros(SHAPE, bool)))
    channels_first = np.moveaxis(disp, -1, 0)  # [3, X, Y, Z] is accepted, as by every metric
    assert M.compute_epe(channels_first, truth, mask) == 1.0


def test_epe_rejects_mismatched_inputs():
    field = np.zeros((*SHAPE, 3), np.float32)
    with pytest.raises(ValueError, match="grids differ"):
        M.compute_epe(field, np.zeros((10, 10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="mask shape"):
        M.compute_epe(field, field, np.ones((4, 4, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        M.compute_epe(field, field, spacing=(1.0, 0.0, 1.0))


# --------------------------------------------------------------------------- IC error


def test_ic_error_of_an_exact_inverse_pair_is_zero():
    t = np.array([1.5, -0.75, 2.0])
    assert M.compute_ic_error(constant_field(t), constant_field(-t), spacing=SPACING) == pytest.approx(0.0, abs=1e-12)
    # an affine map and its exact inverse: u(x) = A (x - c), v(y) = (-(I + A)^-1 A) (y - c); trilinear
    # interpolation is exact for affine fields, away from the border clamp
    a = np.array([[0.10, 0.02, 0.0], [-0.03, 0.05, 0.01], [0.0, 0.02, -0.04]])
    b = -np.linalg.inv(np.eye(3) + a) @ a
    u, v = affine_field(a), affine_field(b)
    assert M.compute_ic_error(u, v, box_mask(), SPACING) == pytest.approx(0.0, abs=1e-9)
    assert M.compute_ic_error(u.astype(np.float32), v.astype(np.float32), box_mask(), SPACING) < 1e-5


def test_ic_error_of_a_known_non_inverse_pair():
    # translations that do not cancel: residual t + s everywhere
    t, s = np.array([1.0, 2.0, -1.0]), np.array([-0.5, -2.0, 0.0])
    expected = math.sqrt((0.5 * 1.0) ** 2 + 0.0 + (1.0 * 2.0) ** 2)
    assert M.compute_ic_error(constant_field(t), constant_field(s), spacing=SPACING) == pytest.approx(expected)
    # u = A (x - c) with v = 0: the residual is u itself, so the error is the mean |S A (x - c)| over the mask
    a = np.diag([0.1, -0.2, 0.05])
    u = affine_field(a)
    mask = box_mask()
    analytic = np.linalg.norm(u[mask] * np.array(SPACING), axis=1).mean()
    assert M.compute_ic_error(u, np.zeros_like(u), mask, SPACING) == pytest.approx(analytic, rel=1e-12)
    # u and v both A (x - c): residual A (x - c) + A (x + A (x - c) - c) = (2A + A²)(x - c)
    both = np.linalg.norm(affine_field(2 * a + a @ a)[mask] * np.array(SPACING), axis=1).mean()
    assert M.compute_ic_error(u, u, mask, SPACING) == pytest.approx(both, rel=1e-12)


def test_ic_error_equals_the_literal_torch_composition(rng):
    """A second implementation: |S (Φ21 ∘ Φ12 - id)| = |S compose(v, u)| through ``grid_sample`` (border)."""
    u = smooth_field(rng, 3.0).astype(np.float64)
    v = -u + smooth_field(rng, 0.5).astype(np.float64)  # not an exact inverse; large enough to leave the grid
    mask = ndi.gaussian_filter(rng.random(SHAPE), 2) > 0.5

    def torch_field(f: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(f, -1, 0)))[None]

    residual = np.moveaxis(compose(torch_field(v), torch_field(u))[0].numpy(), 0, -1)
    literal = np.linalg.norm(residual[mask] * np.array(SPACING), axis=1).mean()
    assert M.compute_ic_error(u, v, mask, SPACING) == pytest.approx(literal, rel=1e-10)


def test_ic_error_samples_the_inverse_on_its_own_grid():
    """The inverse lives on the moving grid, which may differ in size: it is indexed in moving voxels."""
    moving_shape = (30, 12, 20)
    v = np.zeros((*moving_shape, 3))
    v[..., 0] = np.arange(moving_shape[0])[:, None, None] * 0.1  # v depends on the moving x index only
    u = constant_field([2.0, 0.0, 0.0])
    mask = np.zeros(SHAPE, bool)
    mask[3, 4, 5] = True  # x + u(x) = (5, 4, 5): v there is 0.5
    assert M.compute_ic_error(u, v, mask) == pytest.approx(2.5)


# --------------------------------------------------------------------------- through evaluate_pair


def test_evaluate_pair_reports_epe_and_ic_error_inside_the_fixed_brain(rng):
    fixed_seg = np.zeros(SHAPE, np.int32)
    fixed_seg[4:16, 5:19, 3:13] = 1
    fixed_seg[8:12, 9:15, 6:10] = 2
    truth = smooth_field(rng, 1.5)
    disp = truth + np.float32(0.25)
    res = M.evaluate_pair(disp, fixed_seg=fixed_seg, moving_seg=fixed_seg, labels=[1, 2], ndv_mask_kind="none",
                          spacing=SPACING, true_disp=truth, inverse_disp=-disp)  # fmt: skip
    assert res.computed == ("dice", "hd95", "sdlogj", "ndv", "nondiff_voxels", "epe", "ic_error")
    brain = fixed_seg > 0
    assert res["epe"].value == M.compute_epe(disp, truth, brain, SPACING)
    assert res["epe"].value == pytest.approx(0.25 * math.sqrt(1 + 1.5**2 + 2**2), rel=1e-6)
    assert res["ic_error"].value == M.compute_ic_error(disp, -disp, brain, SPACING) and res["ic_error"].value > 0
    without = M.evaluate_pair(disp, fixed_seg=fixed_seg, moving_seg=fixed_seg, labels=[1, 2], ndv_mask_kind="none")
    assert "epe" not in without and "ic_error" not in without  # no ground truth, no inverse: not computed
    only = M.evaluate_pair(disp, ndv_mask_kind="none", true_disp=truth)
    assert "epe" not in only  # no fixed segmentation: no brain mask
