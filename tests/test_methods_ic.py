"""Inverse-consistent models: DP-ConvIC-{MF, C, MFC}, SITReg and their shared symmetric pyramid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

import methods
from methods.correlation import correlation
from methods.dp_ic import (
    BSPLINE_BOUNDS,
    MAX_CONTROL_POINT_MULTIPLIER,
    SymmetricPyramid,
    ic_decoder_inputs,
    ic_input_channels,
    reverse_correlation,
    to_level,
)
from methods.spatial import compose, identity_grid, warp
from tests.ic_reference import reference_forward

INNER = (..., slice(4, -4), slice(4, -4), slice(4, -4))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def smooth_pair(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two smooth random images ``[1, 1, *shape]`` in [0, 1]."""
    out = []
    for _ in range(2):
        img = gaussian_filter(rng.random(shape), 2.0)
        out.append(torch.from_numpy((img - img.min()) / (img.max() - img.min())).float()[None, None])
    return out[0], out[1]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dp-convic-mf", 2_854_079),
        ("dp-convic-c", 2_307_519),
        ("dp-convic-mfc", 3_483_071),
        ("sitreg", 15_076_110),
    ],
)
def test_parameter_counts(name: str, expected: int) -> None:
    model = methods.build(name)
    print(f"{name}: {n_params(model):,} parameters")
    assert n_params(model) == expected
    rebuilt = methods.build(name, **model.config)
    assert rebuilt.config == model.config


def test_sitreg_parts_and_bounds() -> None:
    model = methods.build("sitreg")
    assert n_params(model.encoder) == 3_332_928
    assert [n_params(net) for net in model.update_nets] == [
        11_775,
        221_763,
        885_891,
        3_541_251,
        3_541_251,
        3_541_251,
    ]
    assert [round(model.bound(k) / 0.99, 4) for k in range(6)] == [
        0.36,
        0.3854,
        0.398,
        0.4007,
        0.4018,
        0.4025,
    ]
    ic = methods.build("dp-convic-mf")
    assert [round(ic.bound(k) / 0.99, 5) for k in range(5)] == [0.36, 0.38545, 0.39803, 0.40073, 0.40175]


def test_reverse_correlation_equals_direct_computation() -> None:
    gen = torch.Generator().manual_seed(3)
    # Integer-valued features: every product and sum is exact, so the two must agree bit for bit.
    a = torch.randint(-3, 4, (2, 16, 7, 9, 6), generator=gen).float()
    b = torch.randint(-3, 4, (2, 16, 7, 9, 6), generator=gen).float()
    assert torch.equal(reverse_correlation(correlation(a, b)), correlation(b, a))
    # Generic float features: equal up to float32 summation order.
    a, b = torch.randn(1, 32, 8, 8, 8, generator=gen), torch.randn(1, 32, 8, 8, 8, generator=gen)
    assert torch.allclose(reverse_correlation(correlation(a, b)), correlation(b, a), atol=1e-6, rtol=0)


@pytest.mark.parametrize("inputs", ["mf", "c", "mfc"])
def test_decoder_inputs_swap_under_image_swap(inputs: str) -> None:
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(1, 16, 6, 6, 6, generator=gen), torch.randn(1, 16, 6, 6, 6, generator=gen)
    fwd, rev = ic_decoder_inputs(inputs, a, b)
    fwd_swapped, rev_swapped = ic_decoder_inputs(inputs, b, a)
    assert fwd.shape[1] == ic_input_channels(inputs, 16) == {"mf": 32, "c": 54, "mfc": 86}[inputs]
    assert torch.allclose(fwd, rev_swapped, atol=1e-6) and torch.allclose(rev, fwd_swapped, atol=1e-6)
    if inputs == "mfc":  # channel order cat[a, c_ab, c_ba, b]
        assert torch.equal(fwd[:, :16], a) and torch.equal(fwd[:, -16:], b)
        assert torch.equal(fwd[:, 16:43], correlation(a, b))


def test_to_level_samples_at_level_voxel_centres() -> None:
    # Affine field u(x) = A x + t on a 16×12×8 grid; level with factor 4 has 4×3×2 voxels centred at
    # X(i) = 4 i + 1.5; interior samples are exact for an affine field (linear interpolation).
    size, factor = (16, 12, 8), 4
    A = torch.tensor([[0.02, -0.01, 0.03], [0.0, 0.05, -0.02], [0.01, 0.0, -0.04]])
    t = torch.tensor([0.5, -1.0, 2.0])
    x = identity_grid(size)[0]
    u = (torch.einsum("ij,j...->i...", A, x) + t.view(3, 1, 1, 1))[None]
    level = to_level(u, factor, (4, 3, 2))
    centres = (identity_grid((4, 3, 2))[0] + 0.5) * factor - 0.5
    expected = (torch.einsum("ij,j...->i...", A, centres) + t.view(3, 1, 1, 1)) / factor
    assert torch.allclose(level[0], expected, atol=1e-5)
    # Warping level features that hold their own centres' full-res coordinates through to_level(u) gives
    # the full-res coordinates of φ(X) = X + u(X): the grid conventions of features and maps agree.
    feats = centres[None]
    small = 0.2 * u  # stays inside the level grid's centre range at the sampled points
    moved = warp(feats, to_level(small, factor, (4, 3, 2)))
    target = centres + torch.einsum("ij,j...->i...", 0.2 * A, centres) + 0.2 * t.view(3, 1, 1, 1)
    inside = (
        (target >= centres.amin(dim=(1, 2, 3), keepdim=True))
        & (target <= centres.amax(dim=(1, 2, 3), keepdim=True))
    ).all(dim=0)
    assert inside.sum() >= 6
    assert torch.allclose(moved[0][:, inside], target[:, inside], atol=1e-4)


class _TranslatingPyramid(SymmetricPyramid):
    """Test double: 3 levels (factors 1, 2, 4) whose "features" are the images average-pooled per level.

    The coarsest update is a prescribed constant forward control point ``c`` along axis 0 (reverse: 0), so
    ``L = +s·c``, ``R = −s·c``; the finer levels record the sampled features and output zero updates.
    """

    def __init__(self, control: float) -> None:
        super().__init__(forward_solver={"tol": 1e-6})
        self.factors = (1, 2, 4)
        self.seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        raw = math.atanh(control / (MAX_CONTROL_POINT_MULTIPLIER * BSPLINE_BOUNDS[4]))

        class _Net(nn.Module):
            def __init__(self, level: int) -> None:
                super().__init__()
                self.level = level

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out = torch.zeros(x.shape[0], 3, *x.shape[2:])
                if self.level == 2:
                    out[: x.shape[0] // 2, 0] = raw
                return out

        self.update_nets = nn.ModuleList(_Net(k) for k in range(3))

    def features(self, image_1: torch.Tensor, image_2: torch.Tensor) -> list[torch.Tensor]:
        both = torch.cat([image_1, image_2])
        return [both if s == 1 else F.avg_pool3d(both, s) for s in self.factors]

    def update_inputs(
        self, level: int, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen[level] = (a, b)
        return torch.cat([a, b], dim=1), torch.cat([b, a], dim=1)


def test_pyramid_directions_align_moving_to_fixed(rng: np.random.Generator) -> None:
    # fixed = smooth blob image; moving(x) = fixed(x − 2 s c e0): fixed shifted by +2sc along axis 0.
    shape = (32, 24, 24)
    fixed = torch.from_numpy(gaussian_filter(rng.random(shape), 2.5)).float()[None, None]
    control = 0.25  # integer shifts: every sampling below is exact
    shift = 2 * 4 * control  # L moves by +4c (factor 4), R by −4c: Φ12 = L∘R⁻¹ moves by 8c = 2 voxels
    offset = torch.zeros(1, 3, *shape)
    offset[:, 0] = -shift
    moving = warp(fixed, offset)
    model = _TranslatingPyramid(control)
    out, controls = model.forward_with_controls(moving, fixed)
    assert torch.allclose(controls[0][0, 0], torch.full((8, 6, 6), control), atol=1e-5)
    assert torch.allclose(out.disp[:, 0], torch.full(shape, shift), atol=1e-4)
    assert torch.allclose(out.inverse[:, 0], torch.full(shape, -shift), atol=1e-4)
    assert out.disp[:, 1:].abs().max() < 1e-5
    # The finest level saw a = moving∘L and b = fixed∘R, which agree (the half-way space)...
    a, b = model.seen[0]
    assert (a - b)[INNER].abs().max() < 1e-5
    # ... and warp(moving, disp) reproduces fixed: disp is the moving → fixed pull-back.
    assert (warp(moving, out.disp) - fixed)[INNER].abs().max() < 1e-5
    assert (warp(moving, out.inverse) - fixed)[INNER].abs().max() > 0.01  # the other direction does not


def _check_model(model: SymmetricPyramid, moving: torch.Tensor, fixed: torch.Tensor, ic_tol: float) -> None:
    """Forward + backward shapes, bounds, inverse consistency and swap symmetry of one model."""
    out, controls = model.forward_with_controls(moving, fixed)
    shape = (moving.shape[0], 3, *moving.shape[2:])
    assert out.disp.shape == shape and out.inverse.shape == shape
    n_levels = len(model.update_nets)
    for i, control in enumerate(controls):  # coarse → fine
        level = n_levels - 1 - i
        assert control.shape[2:] == tuple(math.ceil(n / 2**level) for n in moving.shape[2:])
        assert control.abs().max() <= model.bound(level) + 1e-6
    (out.disp.square().mean() + out.inverse.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # Φ12∘Φ21 = id and Φ21∘Φ12 = id away from the border.
    assert compose(out.disp, out.inverse)[INNER].abs().max() < ic_tol
    assert compose(out.inverse, out.disp)[INNER].abs().max() < ic_tol
    with torch.no_grad():
        swapped = model(fixed, moving)
    assert torch.allclose(swapped.disp, out.inverse.detach(), atol=1e-4)
    assert torch.allclose(swapped.inverse, out.disp.detach(), atol=1e-4)


def test_dp_convic_mf_inverse_consistency_and_symmetry(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    model = methods.build("dp-convic-mf", img_size=(32, 32, 32))
    moving, fixed = smooth_pair(rng, (32, 32, 32))
    with torch.no_grad():
        _, controls = model.forward_with_controls(moving, fixed)
    # The flow heads start at N(0, 1e-5): the initial updates are tiny.
    assert max(c.abs().max() for c in controls) < 1e-2
    # Larger heads so that every level moves (up to ~3 voxels in all), then the full checks.
    for net in model.update_nets:
        nn.init.normal_(net.head.weight, std=3e-3)
    _check_model(model, moving, fixed, ic_tol=0.1)


@pytest.mark.parametrize("name", ["dp-convic-c", "dp-convic-mfc"])
def test_dp_convic_correlation_variants(name: str, rng: np.random.Generator) -> None:
    torch.manual_seed(1)
    model = methods.build(name, img_size=(32, 16, 16))
    for net in model.update_nets:
        nn.init.normal_(net.head.weight, std=3e-3)
    moving, fixed = smooth_pair(rng, (32, 16, 16))
    out, controls = model.forward_with_controls(moving, fixed)
    assert out.disp.shape == (1, 3, 32, 16, 16)
    assert controls[0].shape == (2, 3, 2, 1, 1)  # level 4
    assert max((c.abs().max() / model.bound(4 - i)).item() for i, c in enumerate(controls)) > 0.1
    inner = (..., slice(4, -4), slice(3, -3), slice(3, -3))
    assert compose(out.disp, out.inverse)[inner].abs().max() < 0.1
    with torch.no_grad():
        swapped = model(fixed, moving)
    assert torch.allclose(swapped.disp, out.inverse, atol=1e-4)


def test_activation_checkpointing_gives_the_same_gradients(rng: np.random.Generator) -> None:
    moving, fixed = smooth_pair(rng, (32, 16, 16))
    grads = []
    for flag in (False, True):
        torch.manual_seed(2)
        model = methods.build("dp-convic-c", img_size=(32, 16, 16), checkpoint_levels=flag)
        assert model.config["checkpoint_levels"] is flag
        for net in model.update_nets:
            nn.init.normal_(net.head.weight, std=3e-3)
        out = model(moving, fixed)
        (out.disp.square().sum() + out.inverse.abs().sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    # Equal up to float rounding (the checkpointed nets run one direction at a time).
    assert (grads[0] - grads[1]).norm() / grads[0].norm() < 1e-4


def test_bf16_autocast_keeps_the_maps_in_float32(rng: np.random.Generator) -> None:
    torch.manual_seed(3)
    model = methods.build("dp-convic-mf", img_size=(32, 16, 16))
    for net in model.update_nets:
        nn.init.normal_(net.head.weight, std=3e-3)
    moving, fixed = smooth_pair(rng, (32, 16, 16))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, controls = model.forward_with_controls(moving, fixed)
    # The maps are float32 and as inverse-consistent as without autocast (bf16 coordinates would not be).
    assert out.disp.dtype == out.inverse.dtype == torch.float32
    assert all(c.dtype == torch.float32 for c in controls)
    inner = (..., slice(4, -4), slice(3, -3), slice(3, -3))
    assert compose(out.disp, out.inverse)[inner].abs().max() < 0.1
    assert compose(out.inverse, out.disp)[inner].abs().max() < 0.1


def test_sitreg_any_size_inverse_consistency_and_symmetry(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    model = methods.build("sitreg", img_size=(20, 26, 18))
    moving, fixed = smooth_pair(rng, (20, 26, 18))
    _check_model(model, moving, fixed, ic_tol=0.1)


@pytest.mark.parametrize(
    ("name", "shape", "head_std"),
    [
        ("dp-convic-mf", (32, 16, 16), 3e-3),
        ("dp-convic-c", (32, 16, 16), 1e-2),
        ("dp-convic-mfc", (16, 32, 16), 3e-3),
        ("sitreg", (20, 26, 18), None),  # PyTorch's default init already moves every level
    ],
)
def test_model_equals_the_literal_reference_chain(
    name: str, shape: tuple[int, int, int], head_std: float | None, rng: np.random.Generator
) -> None:
    # float64 model, inversions solved to 1e-6 (max change); the reference solves to 1e-11.
    torch.manual_seed(4)
    model = methods.build(name, img_size=shape, forward_solver={"tol": 1e-6, "max_iter": 500}).double().eval()
    if head_std is not None:
        for net in model.update_nets:
            nn.init.normal_(net.head.weight, std=head_std)
    moving, fixed = (image.double() for image in smooth_pair(rng, shape))
    with torch.no_grad():
        out = model(moving, fixed)
    assert out.disp.dtype == out.inverse.dtype == torch.float64

    def max_error(reference: tuple[np.ndarray, np.ndarray]) -> float:
        return max(float(np.abs(out.disp[0].numpy() - reference[0]).max()),
                   float(np.abs(out.inverse[0].numpy() - reference[1]).max()))  # fmt: skip

    reference = reference_forward(model, moving, fixed, orders=("authors", "stored-update"))
    error = max_error(reference["authors"])
    old_order_error = max_error(reference["stored-update"])
    print(f"{name}: max |disp| {out.disp.abs().max():.2f} voxel; model vs reference {error:.1e} voxel; "
          f"vs the old order (grid-stored U⁻¹ composed with L⁻¹) {old_order_error:.1e} voxel")  # fmt: skip
    assert out.disp.abs().max() > 1.0  # a real deformation, not a near-identity that any order reproduces
    assert error <= 1e-5
    assert old_order_error > 1e-3  # the old order fails the same test by orders of magnitude


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        methods.build("dp-convic-mf", img_size=(30, 32, 32))
    with pytest.raises(ValueError, match="unknown decoder input"):
        methods.build("dp-convic-mf", inputs="cm")
    model = methods.build("dp-convic-mf", img_size=(16, 16, 16))
    with pytest.raises(ValueError, match="one shape"):
        model(torch.zeros(1, 1, 16, 16, 16), torch.zeros(1, 1, 16, 16, 32))
