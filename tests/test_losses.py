"""Training losses: VFA-style local NCC² with a 9³ box window, and the diffusion regulariser."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from methods.losses import box_mean, diffusion, local_cc2, ncc_vfa, registration_loss
from methods.registry import RegistrationOutput
from methods.spatial import identity_grid, warp


def _ncc_conv3d(fixed: torch.Tensor, warped: torch.Tensor, window: int) -> torch.Tensor:
    """Reference: the paper's formulation, local sums by a 3-D convolution with ones, float64."""
    f, m = fixed.double(), warped.double()
    ones = torch.ones(1, 1, window, window, window, dtype=torch.float64)
    n = window**3
    pad = window // 2
    sums = [F.conv3d(t, ones, padding=pad) for t in (f, m, f * f, m * m, f * m)]
    mu_f, mu_m = sums[0] / n, sums[1] / n
    cross = sums[4] - mu_m * sums[0] - mu_f * sums[1] + mu_f * mu_m * n
    var_f = sums[2] - 2 * mu_f * sums[0] + mu_f * mu_f * n
    var_m = sums[3] - 2 * mu_m * sums[1] + mu_m * mu_m * n
    cc = (cross / n) ** 2 / (var_f * var_m / n**2).clamp_min(torch.finfo(torch.float32).eps)
    return 1 - cc.mean()


@pytest.mark.parametrize("window", [9, 5])
def test_ncc_matches_conv3d_reference(window: int) -> None:
    g = torch.Generator().manual_seed(0)
    fixed = F.avg_pool3d(torch.rand(2, 1, 24, 36, 20, generator=g), 3, 1, 1)  # smooth-ish, like images
    warped = 0.6 * fixed + 0.4 * torch.rand(2, 1, 24, 36, 20, generator=g)
    got = ncc_vfa(fixed, warped, window)
    ref = _ncc_conv3d(fixed, warped, window)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), abs=1e-6)
    assert 0.05 < got.item() < 0.95  # a non-trivial value, so the comparison means something


def test_box_mean_zero_padding() -> None:
    out = box_mean(torch.ones(1, 1, 12, 12, 12), 9)
    assert out[0, 0, 6, 6, 6].item() == pytest.approx(1.0)  # interior: window fully inside
    assert out[0, 0, 0, 0, 0].item() == pytest.approx((5 / 9) ** 3)  # corner: 5 of 9 per axis inside
    assert out[0, 0, 0, 6, 6].item() == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="odd"):
        box_mean(torch.ones(1, 1, 4, 4, 4), 4)


def test_ncc_invariances_and_range() -> None:
    g = torch.Generator().manual_seed(1)
    fixed = torch.rand(1, 1, 16, 20, 12, generator=g)
    assert ncc_vfa(fixed, fixed).item() == pytest.approx(0.0, abs=1e-5)
    # invariant to a negative intensity scaling (the coefficient is squared); not to an offset near the
    # border, where the zero padding no longer matches the shifted image
    assert ncc_vfa(fixed, -2.0 * fixed).item() == pytest.approx(0.0, abs=1e-5)
    shifted = local_cc2(fixed, fixed + 3.0)
    assert shifted[..., 4:-4, 4:-4, 4:-4].min().item() == pytest.approx(1.0, abs=1e-4)
    assert shifted[..., 0, 0, 0].item() < 0.9
    cc = local_cc2(fixed, torch.rand(1, 1, 16, 20, 12, generator=g))
    assert tuple(cc.shape) == (1, 1, 16, 20, 12) and cc.min() >= 0 and cc.max() <= 1 + 1e-5
    # constant images: zero variance → clamped denominator → cc = 0, loss 1 (no NaN)
    assert ncc_vfa(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8)).item() == 1.0


def test_ncc_float32_under_autocast() -> None:
    g = torch.Generator().manual_seed(2)
    fixed, warped = torch.rand(1, 1, 16, 16, 16, generator=g), torch.rand(1, 1, 16, 16, 16, generator=g)
    ref = ncc_vfa(fixed, warped)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ncc_vfa(fixed.bfloat16(), warped.bfloat16())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), abs=1e-2)  # only the bf16 rounding of the inputs


def test_ncc_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        ncc_vfa(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 4))


def test_diffusion_of_linear_field_is_analytic() -> None:
    # u_c(x) = Σ_j A_cj x_j + b_c: every forward difference along j is the constant A_cj, so the loss is
    # (1/3) Σ_j mean_c A_cj² = Σ A² / 9.
    A = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.5, -0.4], [1.0, 0.2, 0.0]])
    x = identity_grid((7, 9, 5))
    disp = torch.einsum("cj,bjxyz->bcxyz", A, x) + torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1, 1)
    assert diffusion(disp).item() == pytest.approx((A**2).sum().item() / 9, rel=1e-6)
    assert diffusion(torch.full((2, 3, 6, 6, 6), 4.2)).item() == 0.0
    # a checkerboard along axis 0 only: differences ±1 along x, 0 along y and z → 1/3
    check = (torch.arange(6) % 2).float().view(1, 1, 6, 1, 1).expand(1, 3, 6, 4, 4)
    assert diffusion(check).item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="displacement"):
        diffusion(torch.zeros(3, 4, 4, 4))


def test_registration_loss_plain_and_inverse_consistent() -> None:
    g = torch.Generator().manual_seed(3)
    moving = F.avg_pool3d(torch.rand(1, 1, 16, 16, 16, generator=g), 3, 1, 1)
    zero = torch.zeros(1, 3, 16, 16, 16)
    loss, sim, reg = registration_loss(moving, moving, RegistrationOutput(disp=zero))
    assert loss.item() == pytest.approx(0.0, abs=1e-5) and reg.item() == 0.0
    # a shift by one voxel along axis 0: warped(x) = moving(x + 1) (border-clamped at the last slice)
    shift = torch.zeros(1, 3, 16, 16, 16)
    shift[:, 0] = 1.0
    fixed = torch.cat([moving[:, :, 1:], moving[:, :, -1:]], dim=2)
    loss, sim, reg = registration_loss(moving, fixed, RegistrationOutput(disp=shift), reg_weight=5.0)
    assert sim.item() == pytest.approx(0.0, abs=1e-5) and loss.item() == pytest.approx(sim.item())
    # inverse-consistent: the mean of both directions' terms; here the inverse field is rough
    inverse = 0.3 * torch.randn(1, 3, 16, 16, 16, generator=g)
    loss, sim, reg = registration_loss(moving, fixed, RegistrationOutput(disp=shift, inverse=inverse), 2.0)
    warped_fixed = warp(fixed, inverse)
    expected_sim = 0.5 * (ncc_vfa(fixed, fixed) + ncc_vfa(moving, warped_fixed))
    assert sim.item() == pytest.approx(expected_sim.item(), abs=1e-6)
    assert reg.item() == pytest.approx(0.5 * diffusion(inverse).item())
    assert loss.item() == pytest.approx(sim.item() + 2.0 * reg.item())
