"""DP-Conv (a) and DP-VFA (c) (Liu, Ruan & Sheng, MIDL 2025): counts, shapes, init, skeleton, config."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import methods
from methods.correlation import correlation
from methods.dp import DECODER_WIDTHS, DPNet, conv_decoder_input
from methods.spatial import compose, resize_flow, warp

SIZE = (32, 32, 32)
#: smaller and non-cubic, for the structural tests (level 4 is 1×2×1 voxels)
SMALL = (16, 32, 16)

COUNTS = {
    "dp-conv-mf": 2_854_079,
    "dp-conv-mfc": 3_168_575,
    "dp-conv-c": 1_993_023,
    "dp-vfa": 791_104,
    "dp-conv-mf-small": 1_397_407,
    "dp-conv-mf-medium": 2_854_079,
    "dp-conv-mf-large": 7_467_775,
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def pair(seed: int = 0, size: tuple[int, int, int] = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, *size, generator=g), torch.rand(1, 1, *size, generator=g)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_param_counts(name: str) -> None:
    model = methods.build(name)
    assert n_params(model) == COUNTS[name]
    assert n_params(model.encoder) == 507_504


def test_decoder_param_split_matches_table1() -> None:
    # Table 1 lists (encoder / decoder): 0.51 / 2.35, 2.66, 1.49 and 0.28 M.
    expected = {"dp-conv-mf": 2_346_575, "dp-conv-mfc": 2_661_071, "dp-conv-c": 1_485_519, "dp-vfa": 283_600}
    for name, count in expected.items():
        assert n_params(methods.build(name).levels) == count


def test_scaling_family_widths() -> None:
    medium = methods.build("dp-conv-mf-medium")
    assert medium.config == methods.build("dp-conv-mf").config
    assert methods.build("dp-conv-mf-small").config["widths"] == [w // 2 for w in DECODER_WIDTHS]
    assert methods.build("dp-conv-mf-large").config["widths"] == [w * 2 for w in DECODER_WIDTHS]
    torch.manual_seed(0)
    a = methods.build("dp-conv-mf", img_size=SMALL)
    torch.manual_seed(0)
    b = methods.build("dp-conv-mf-medium", img_size=SMALL)
    m, f = pair(0, SMALL)
    torch.testing.assert_close(a(m, f).disp, b(m, f).disp, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["dp-conv-mf", "dp-conv-mfc", "dp-conv-c", "dp-vfa"])
def test_forward_backward_and_init(name: str) -> None:
    torch.manual_seed(0)
    model = methods.build(name, img_size=SIZE)
    m, f = pair()
    levels = model.forward_levels(m, f)
    assert [lv.level for lv in levels] == [4, 3, 2, 1, 0]
    for lv in levels:
        shape = (1, 3, *(n // 2**lv.level for n in SIZE))
        assert tuple(lv.residual.shape) == shape and tuple(lv.total.shape) == shape
    disp = levels[-1].total
    with torch.no_grad():
        out = model(m, f)
    assert isinstance(out, methods.RegistrationOutput) and out.inverse is None
    assert tuple(out.disp.shape) == (1, 3, *SIZE) and out.disp.dtype == torch.float32
    torch.testing.assert_close(out.disp, disp, rtol=0, atol=0)
    disp.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.encoder.stem.weight.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in model.levels[0].parameters())

    res_max = {lv.level: lv.residual.abs().max().item() for lv in levels}
    if name == "dp-vfa":  # no learnt head: the attention moves up to 1 voxel of its level from the start
        assert max(res_max.values()) <= 1.0 + 1e-6
        return
    # Flow heads N(0, std 1e-5): every level's residual is below 1e-2 voxel of its level at init.
    assert max(res_max.values()) < 1e-2
    # Upsampling doubles values and composition adds at most the max of the parts, so the full-resolution
    # field is bounded by Σ 2^k max|u_res_k| (the coarsest residual is magnified 16×).
    assert disp.abs().max().item() <= sum(2**k * r for k, r in res_max.items()) + 1e-7
    assert disp.square().mean().sqrt().item() < 1e-2


def test_dp_vfa_update_bounded_by_one_voxel() -> None:
    torch.manual_seed(0)
    model = methods.build("dp-vfa", img_size=SMALL)
    with torch.no_grad():
        for p in model.levels.parameters():  # sharpen the attention so that the bound is approached
            p.mul_(8.0)
        levels = model.forward_levels(*pair(2, SMALL))
    for lv in levels:
        assert lv.residual.abs().max() <= 1.0 + 1e-6  # a convex combination of offsets in {-1, 0, 1}
    assert max(lv.residual.abs().max().item() for lv in levels) > 0.5


class _FixedField(nn.Module):
    """Decoder stand-in that records its inputs and returns a given field."""

    def __init__(self, field: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.inputs: tuple[torch.Tensor, ...] = ()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.inputs = inputs
        return self.field


def _smooth_field(size: tuple[int, ...], k: int) -> torch.Tensor:
    x, y, z = torch.meshgrid(*[torch.linspace(0, 3.1, n) for n in size], indexing="ij")
    return torch.stack([torch.sin(x + k) * 0.8, torch.cos(y * z) * 0.6, torch.sin(x * y - k) * 0.7])[None]


@pytest.mark.parametrize("decoder", ["conv", "vfa"])
def test_skeleton_composes_levels(decoder: str) -> None:
    torch.manual_seed(0)
    model = DPNet(img_size=SMALL, decoder=decoder)
    m, f = pair(3, SMALL)
    fields = {k: _smooth_field(tuple(n // 2**k for n in SMALL), k) for k in range(5)}
    for k in range(5):
        model.levels[k] = _FixedField(fields[k])
    out = model(m, f).disp
    with torch.no_grad():
        feats_m, feats_f = model.encoder(m), model.encoder(f)
    expected = fields[4]
    for k in range(3, -1, -1):
        up = resize_flow(expected, 2.0)
        moved = warp(feats_m[k], up)
        got_inputs = model.levels[k].inputs
        if decoder == "conv":  # the level saw cat[warp(m_k, u_up), f_k]
            torch.testing.assert_close(got_inputs[0], torch.cat([moved, feats_f[k]], 1))
        else:
            torch.testing.assert_close(got_inputs[0], moved)
            torch.testing.assert_close(got_inputs[1], feats_f[k])
        # compose(u_up, u_res) = u_res + u_up sampled at x + u_res: apply u_up first, then u_res
        expected = fields[k] + warp(up, fields[k])
        torch.testing.assert_close(expected, compose(up, fields[k]))
    torch.testing.assert_close(out, expected)
    # A sum of the upsampled fields would be a different answer: the test tells the two apart.
    added = fields[4]
    for k in range(3, -1, -1):
        added = resize_flow(added, 2.0) + fields[k]
    assert (out - added).abs().max() > 0.1


def test_decoder_inputs_order() -> None:
    torch.manual_seed(0)
    m = torch.randn(1, 4, 4, 6, 4)
    f = torch.randn(1, 4, 4, 6, 4)
    corr = correlation(f, m)  # fixed stays put, moving is shifted
    assert not torch.allclose(corr, correlation(m, f))
    torch.testing.assert_close(conv_decoder_input("mf", m, f), torch.cat([m, f], 1))
    torch.testing.assert_close(conv_decoder_input("mfc", m, f), torch.cat([m, corr, f], 1))
    torch.testing.assert_close(conv_decoder_input("c", m, f), corr)
    with pytest.raises(ValueError, match="unknown decoder input"):
        conv_decoder_input("cm", m, f)


@pytest.mark.parametrize("name", ["dp-vfa", "dp-conv-mf-small"])
def test_rebuild_from_config(name: str) -> None:
    torch.manual_seed(0)
    model = methods.build(name, img_size=SMALL)
    config = json.loads(json.dumps(model.config))
    torch.manual_seed(123)  # different init; the state dict must bring the weights back
    clone = methods.build(name, **config)
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())
    m, f = pair(4, SMALL)
    with torch.no_grad():
        for p in model.levels.parameters():  # make the heads matter
            p.add_(0.01)
        clone.load_state_dict(model.state_dict())
        torch.testing.assert_close(clone(m, f).disp, model(m, f).disp, rtol=0, atol=0)


def test_checkpoint_levels_same_values_and_grads() -> None:
    torch.manual_seed(0)
    plain = methods.build("dp-conv-mf", img_size=SMALL)
    ckpt = methods.build("dp-conv-mf", img_size=SMALL, checkpoint_levels=True)
    ckpt.load_state_dict(plain.state_dict())
    with torch.no_grad():
        for p in list(plain.levels.parameters()) + list(ckpt.levels.parameters()):
            p.add_(1e-3)
    m, f = pair(5, SMALL)
    outs = []
    for model in (plain, ckpt):
        disp = model(m, f).disp
        disp.square().sum().backward()
        outs.append((disp.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for g0, g1 in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("img_size", [(30, 48, 32), (32, 48), (32, 40, 32), (0, 16, 16)])
def test_bad_img_size_raises(img_size: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        methods.build("dp-conv-mf", img_size=img_size)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown decoder"):
        DPNet(img_size=SIZE, decoder="transformer")
    with pytest.raises(ValueError, match="unknown decoder input"):
        DPNet(img_size=SIZE, inputs="cf")
    with pytest.raises(ValueError, match="widths"):
        DPNet(img_size=SIZE, widths=(32, 64))
    with pytest.raises(ValueError, match="takes no"):
        methods.build("dp-vfa", inputs="c")
    model = methods.build("dp-conv-c", img_size=SIZE)
    with pytest.raises(ValueError, match="moving"):
        model(torch.rand(1, 1, 30, 48, 32), torch.rand(1, 1, 32, 48, 32))
    with pytest.raises(ValueError, match="fixed"):
        model(torch.rand(1, 1, 32, 48, 32), torch.rand(1, 2, 32, 48, 32))
