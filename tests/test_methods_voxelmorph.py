"""VoxelMorph (VxmDense_2) baseline: exact parameter counts, wiring, initialisation, rebuild from config.

Counts are checked against ``spec/methods-baselines.md`` §0/§2 and against an independent layer-shape
formula; the forward pass is checked against a hand-unrolled functional version of the spec's layout.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import methods
from methods.voxelmorph import VARIANTS, VoxelMorph

SMALL = (32, 32, 32)

#: Trainable-parameter counts from the spec (Table 1 VoxelMorph and the Fig. B2 scaling variants).
SPEC_COUNTS = {
    "voxelmorph": 301_411,
    "voxelmorph-s": 1_955_091,
    "voxelmorph-m": 4_747_859,
    "voxelmorph-l": 11_347_747,
}


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def formula_count(enc: tuple[int, ...], dec: tuple[int, ...]) -> int:
    """Spec appendix arithmetic: conv3³ with bias = Cin·Cout·27 + Cout, over the VxmDense_2 layer shapes."""

    def conv(c_in: int, c_out: int) -> int:
        return c_in * c_out * 27 + c_out

    n, prev = 0, 2
    for c in enc:
        n, prev = n + conv(prev, c), c
    skips = [0, *reversed(enc[:-1])]
    for c, skip in zip(dec[: len(enc)], skips, strict=True):
        n, prev = n + conv(prev + skip, c), c
    prev += 2  # the raw input joins at full resolution
    for c in dec[len(enc) :]:
        n, prev = n + conv(prev, c), c
    return n + conv(prev, 3)


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_parameter_count_matches_spec_and_formula(name: str) -> None:
    model = methods.build(name)
    assert n_trainable(model) == SPEC_COUNTS[name]
    assert formula_count(*VARIANTS[name]) == SPEC_COUNTS[name]


def test_count_does_not_depend_on_image_size() -> None:
    assert n_trainable(methods.build("voxelmorph", img_size=SMALL)) == SPEC_COUNTS["voxelmorph"]


def test_vxmdense_1_near_miss_is_not_the_table_1_model() -> None:
    # "VxmDense_1" features (8, 32, 32, 32) / (32, 32, 32, 32, 32, 8, 8): 0.27M, not the paper's 0.30M.
    model = methods.build("voxelmorph", enc_features=(8, 32, 32, 32), dec_features=(32, 32, 32, 32, 32, 8, 8))
    assert n_trainable(model) == 274_387 != SPEC_COUNTS["voxelmorph"]


def reference_forward(model: VoxelMorph, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """The spec's §2 layout for the default features, unrolled by hand with functional ops."""
    enc, dec, extras = list(model.encoder), list(model.decoder), list(model.extras)

    def act(conv: torch.nn.Conv3d, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        return F.leaky_relu(F.conv3d(x, conv.weight, conv.bias, stride=stride, padding=1), 0.2)

    def up(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)

    x = torch.cat([moving, fixed], 1)
    e1 = act(enc[0], x, 2)  # 16 @ 1/2
    e2 = act(enc[1], e1, 2)  # 32 @ 1/4
    e3 = act(enc[2], e2, 2)  # 32 @ 1/8
    e4 = act(enc[3], e3, 2)  # 32 @ 1/16
    d = torch.cat([up(act(dec[0], e4)), e3], 1)
    d = torch.cat([up(act(dec[1], d)), e2], 1)
    d = torch.cat([up(act(dec[2], d)), e1], 1)
    d = torch.cat([up(act(dec[3], d)), x], 1)  # 34 channels at full resolution
    for conv in extras:
        d = act(conv, d)
    return F.conv3d(d, model.flow.weight, model.flow.bias, padding=1)


def test_forward_matches_hand_unrolled_spec_layout() -> None:
    torch.manual_seed(0)
    model = methods.build("voxelmorph", img_size=SMALL)
    with torch.no_grad():  # make the head non-trivial so the comparison is sensitive
        model.flow.weight.normal_(0.0, 0.1)
        model.flow.bias.normal_(0.0, 0.1)
        moving, fixed = torch.rand(2, 1, *SMALL), torch.rand(2, 1, *SMALL)
        expected = reference_forward(model, moving, fixed)
        got = model(moving, fixed).disp
    assert expected.abs().mean() > 1e-2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_forward_backward_shapes_and_gradients(name: str) -> None:
    torch.manual_seed(1)
    model = methods.build(name, img_size=SMALL)
    batch = 2 if name == "voxelmorph" else 1  # keep the wide variants cheap
    moving, fixed = torch.rand(batch, 1, *SMALL), torch.rand(batch, 1, *SMALL)
    disp = model(moving, fixed).disp
    assert disp.shape == (batch, 3, *SMALL)
    # Small initial head: |disp| far below a voxel for random inputs.
    assert disp.abs().max() < 1e-2
    (disp - 0.5).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_flow_head_initialisation() -> None:
    torch.manual_seed(2)
    head = methods.build("voxelmorph", img_size=SMALL).flow
    assert head.weight.shape == (3, 16, 3, 3, 3)
    assert torch.count_nonzero(head.bias) == 0
    assert 0.8e-5 < head.weight.std().item() < 1.2e-5  # N(0, 1e-5), 1,296 samples
    assert abs(head.weight.mean().item()) < 2e-6


@pytest.mark.parametrize("name", ["voxelmorph", "voxelmorph-s"])
def test_rebuild_from_config_gives_identical_output(name: str) -> None:
    torch.manual_seed(3)
    model = methods.build(name, img_size=SMALL)
    config = json.loads(json.dumps(model.config))  # what a checkpoint stores
    assert config == {
        "img_size": list(SMALL),
        "enc_features": list(VARIANTS[name][0]),
        "dec_features": list(VARIANTS[name][1]),
    }
    clone = methods.build(name, **config)
    clone.load_state_dict(model.state_dict(), strict=True)
    moving, fixed = torch.rand(1, 1, *SMALL), torch.rand(1, 1, *SMALL)
    with torch.no_grad():
        assert torch.equal(model(moving, fixed).disp, clone(moving, fixed).disp)


def test_bad_sizes_and_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        methods.build("voxelmorph", img_size=(40, 32, 32))
    with pytest.raises(ValueError, match="int_steps: unknown key; known keys: img_size, enc_features"):
        methods.build("voxelmorph", int_steps=7)
    with pytest.raises(ValueError, match="img_sise: unknown key; did you mean 'img_size'"):
        methods.build("voxelmorph", img_sise=(32, 32, 32))
    model = methods.build("voxelmorph", img_size=SMALL)
    with pytest.raises(ValueError, match=r"moving image has shape \(1, 1, 24, 32, 32\).*divisible by 16"):
        model(torch.zeros(1, 1, 24, 32, 32), torch.zeros(1, 1, 24, 32, 32))
    with pytest.raises(ValueError, match="shapes differ"):
        model(torch.zeros(2, 1, *SMALL), torch.zeros(1, 1, *SMALL))
    with pytest.raises(ValueError, match="fixed image has shape"):
        model(torch.zeros(1, 1, *SMALL), torch.zeros(1, 2, *SMALL))


def test_fully_convolutional_any_admissible_size() -> None:
    model = methods.build("voxelmorph", img_size=SMALL)
    assert model(torch.rand(1, 1, 16, 48, 32), torch.rand(1, 1, 16, 48, 32)).disp.shape == (1, 3, 16, 48, 32)
