"""VFA baseline (Liu et al., J. Med. Imaging 2024): counts, pyramid, β-bounded levels, grid composition."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_same_function
from torch import nn

import methods
from methods.spatial import identity_grid, warp
from methods.vfa import VFA, VFAEncoder, _double_conv, upsample_grid

SIZE = (32, 32, 32)
#: non-cubic, for the tests that would catch an axis mix-up (level 4 is 2×3×2 voxels)
SIZE_NC = (32, 48, 32)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def pair(seed: int, size: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, *size, generator=g), torch.rand(1, 1, *size, generator=g)


def test_param_counts() -> None:
    model = methods.build("vfa")
    assert n_params(model) == 2_014_827
    assert n_params(model.encoder) == 1_720_882
    assert n_params(model.levels) == 293_944 and model.beta.item() == pytest.approx(0.1)
    # the near-miss of the spec: one more downsampling gives 2,789,995, not Table 1's 2.01 M
    assert n_params(VFA(downsamples=5)) == 2_789_995


def test_encoder_pyramid() -> None:
    enc = VFAEncoder()
    assert enc.channels == (16, 32, 64, 64, 64)
    feats = enc(torch.rand(1, 1, *SIZE_NC))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, *(n // 2**k for n in SIZE_NC)) for k, c in enumerate(enc.channels)
    ]


def test_conv_norm_act_stack_equals_the_literal_layers() -> None:
    """The fused channels-last stack computes conv → InstanceNorm(affine) → LeakyReLU(0.01), twice, as the plain
    contiguous modules do (values and gradients, float64), with unchanged state-dict keys."""
    torch.manual_seed(0)
    stack = _double_conv(6, 8).double()
    with torch.no_grad():
        for m in stack.modules():
            if isinstance(m, nn.InstanceNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    x = torch.randn(2, 6, 12, 10, 8, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = stack(x)
    ref = x_ref
    for i in (0, 3):
        conv, norm = stack[i], stack[i + 1]
        ref = F.leaky_relu(F.instance_norm(F.conv3d(ref, conv.weight, conv.bias, padding=1), weight=norm.weight,
                                           bias=norm.bias, eps=norm.eps), 0.01)
    assert_same_function(out, ref, [x], [x_ref], list(stack.parameters()))
    assert set(stack.state_dict()) == {f"{i}.{p}" for i in (0, 1, 3, 4) for p in ("weight", "bias")}


def test_forward_backward_and_beta_bound() -> None:
    torch.manual_seed(0)
    model = methods.build("vfa", img_size=SIZE)
    m, f = pair(0, SIZE)
    levels = model.forward_levels(m, f)
    assert [lv.level for lv in levels] == [4, 3, 2, 1, 0]
    for lv in levels:
        shape = (1, 3, *(n // 2**lv.level for n in SIZE))
        assert tuple(lv.residual.shape) == shape and tuple(lv.total.shape) == shape
        # each level's update is β times a convex combination of the offsets {-1, 0, 1}³
        assert lv.residual.abs().max() <= 0.1 * (1 + 1e-6)
    disp = levels[-1].total
    with torch.no_grad():
        out = model(m, f)
    assert isinstance(out, methods.RegistrationOutput) and tuple(out.disp.shape) == (1, 3, *SIZE)
    torch.testing.assert_close(out.disp, disp, rtol=0, atol=0)
    disp.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.beta.grad.abs() > 0 and model.encoder.stem[1].weight.grad.abs().sum() > 0


def test_beta_scales_every_level() -> None:
    torch.manual_seed(0)
    model = methods.build("vfa", img_size=SIZE_NC)
    m, f = pair(1, SIZE_NC)
    with torch.no_grad():
        model.beta.fill_(-0.37)
        levels = model.forward_levels(m, f)
        assert max(lv.residual.abs().max().item() for lv in levels) <= 0.37 * (1 + 1e-6)
        model.beta.zero_()
        # zero up to the float32 rounding of the absolute-coordinate grids (indices up to 47 here)
        assert model(m, f).disp.abs().max() < 1e-4


def test_upsample_grid_keeps_identity_and_rescales() -> None:
    size = (3, 5, 4)
    ident = identity_grid(size)
    torch.testing.assert_close(upsample_grid(ident), identity_grid((6, 10, 8)))
    shift = torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1, 1)
    scale = torch.tensor([5 / 2, 9 / 4, 7 / 3]).view(1, 3, 1, 1, 1)  # (2n − 1) / (n − 1)
    fine = identity_grid((6, 10, 8))
    torch.testing.assert_close(upsample_grid(ident + shift) - fine, (shift * scale).expand_as(fine))


class _FixedField(nn.Module):
    """Stand-in for an attention level: records its inputs, returns a given offset field."""

    def __init__(self, field: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.inputs: tuple[torch.Tensor, ...] = ()

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        self.inputs = (moving, fixed)
        return self.field.expand(1, 3, *fixed.shape[2:])


def _grid_reference(fields: dict[int, torch.Tensor], beta: float) -> torch.Tensor:
    """The spec's recursion written out with absolute grids and raw grid_sample / interpolate calls."""
    grid = ident = torch.empty(0)
    for k in range(4, -1, -1):
        size = fields[k].shape[2:]
        ident = identity_grid(size)
        pos = ident + beta * fields[k]
        if k == 4:
            grid = pos
            continue
        coarse = torch.tensor([(n // 2 * 2 - 1) / (n // 2 - 1) for n in size]).view(1, 3, 1, 1, 1)
        up = F.interpolate(grid, scale_factor=2, mode="trilinear", align_corners=True) * coarse
        norm = torch.stack([2 * pos[:, c] / (size[c] - 1) - 1 for c in (2, 1, 0)], dim=-1)
        grid = F.grid_sample(up, norm, mode="bilinear", padding_mode="border", align_corners=True)
    return grid - ident


def test_grid_composition_matches_spec() -> None:
    torch.manual_seed(0)
    model = VFA(img_size=SIZE_NC)
    m, f = pair(2, SIZE_NC)
    beta = 0.5
    # level 4 and 3 constant (for the analytic check), finer levels smooth and varying, all in [-1, 1]
    fields = {4: torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1, 1), 3: torch.tensor([0.5, -1.0, 0.0])}
    fields[3] = fields[3].view(1, 3, 1, 1, 1).expand(1, 3, *(n // 8 for n in SIZE_NC))
    fields[4] = fields[4].expand(1, 3, *(n // 16 for n in SIZE_NC))
    for k in (2, 1, 0):
        shape = tuple(n // 2**k for n in SIZE_NC)
        x, y, z = torch.meshgrid(*[torch.linspace(0, 3, n) for n in shape], indexing="ij")
        fields[k] = torch.stack([torch.sin(x * y + k), torch.cos(z - k), torch.sin(x - z)])[None]
    for k in range(5):
        model.levels[k] = _FixedField(fields[k])
    with torch.no_grad():
        model.beta.fill_(beta)
        levels = model.forward_levels(m, f)
        feats_m = model.encoder(m)
    # level 4: G = id + β d, no sampling
    torch.testing.assert_close(levels[0].total, beta * fields[4])
    # level 3: the upsampled grid is id + c with c = β d_4 · (2n − 1) / (n − 1); the moving features were
    # sampled through it, and the new grid samples it at x + β d_3 with border clamping.
    n4 = torch.tensor([n // 16 for n in SIZE_NC], dtype=torch.float32)
    c = (beta * fields[4][0, :, 0, 0, 0] * (2 * n4 - 1) / (n4 - 1)).view(1, 3, 1, 1, 1)
    ident = identity_grid(fields[3].shape[2:])
    torch.testing.assert_close(model.levels[3].inputs[0], warp(feats_m[3], c.expand_as(ident)))
    hi = torch.tensor([n // 8 - 1 for n in SIZE_NC], dtype=torch.float32).view(1, 3, 1, 1, 1)
    clamped = torch.minimum(torch.maximum(ident + beta * fields[3], torch.zeros(1)), hi)
    torch.testing.assert_close(levels[1].total, clamped - ident + c)
    # a border voxel pushed outward is clamped: not the plain sum of the displacements
    assert levels[1].total[0, 1, 2, 0, 2].item() == pytest.approx(c[0, 1, 0, 0, 0].item())
    # all levels: the spec's recursion
    torch.testing.assert_close(levels[-1].total, _grid_reference(fields, beta), atol=1e-5, rtol=1e-5)


def test_rebuild_from_config() -> None:
    torch.manual_seed(0)
    model = methods.build("vfa", img_size=SIZE_NC)
    with torch.no_grad():
        model.beta.fill_(0.3)
    config = json.loads(json.dumps(model.config))
    clone = methods.build("vfa", **config)
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())
    m, f = pair(3, SIZE_NC)
    with torch.no_grad():
        torch.testing.assert_close(clone(m, f).disp, model(m, f).disp, rtol=0, atol=0)


@pytest.mark.parametrize("img_size", [(30, 48, 32), (32, 48), (32, 40, 32), (16, 32, 32)])
def test_bad_img_size_raises(img_size: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="divisible by 16 and at least 32"):
        methods.build("vfa", img_size=img_size)
    with pytest.raises(ValueError, match="divisible by 32"):
        methods.build("vfa", img_size=(48, 48, 48), downsamples=5)
    with pytest.raises(ValueError, match="fixed"):
        methods.build("vfa", img_size=SIZE_NC)(torch.rand(1, 1, *SIZE_NC), torch.rand(1, 1, 16, 16, 8))
