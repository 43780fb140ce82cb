"""TransMorph (OASIS variant) baseline: exact parameter count, Swin mechanics, forward/backward, rebuild.

The count is checked against ``spec/methods-baselines.md`` §0/§3 and against an independent formula (the
spec appendix); window attention against an explicit softmax; shifted-window masking and patch merging by
which input tokens each output token depends on (the analytic window layout).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import methods
from methods.transmorph import (
    DropPath,
    PatchMerging,
    SwinBlock,
    TransMorph,
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
    window_merge,
    window_partition,
)

SPEC_COUNT = 46_556_979
SMALL_WINDOW = (2, 2, 2)
#: A narrow TransMorph for the mechanics tests (same layout, a quarter of the width), to keep CPU tests fast.
NARROW = {"embed_dim": 24, "num_heads": (2, 2, 4, 4)}


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def formula_count(
    embed: int = 96,
    depths: tuple[int, ...] = (2, 2, 4, 2),
    heads: tuple[int, ...] = (4, 4, 8, 8),
    window: tuple[int, int, int] = (5, 6, 7),
    mlp_ratio: int = 4,
    head_chan: int = 16,
) -> int:
    """Spec appendix arithmetic for the OASIS variant (Swin block, patch merging, decoder, skips, head)."""

    def conv(c_in: int, c_out: int, k: int = 3, bias: bool = True) -> int:
        return c_in * c_out * k**3 + (c_out if bias else 0)

    table = math.prod(2 * w - 1 for w in window)
    n = conv(2, embed, k=4) + 2 * embed  # patch embedding + LayerNorm
    for i, (depth, h) in enumerate(zip(depths, heads, strict=True)):
        C = embed * 2**i
        hidden = mlp_ratio * C
        block = 4 * C + table * h + 3 * C * C + C * C + C + (C * hidden + hidden) + (hidden * C + C)
        n += depth * block + 2 * C  # blocks + stage output LayerNorm
        if i < 3:
            n += 16 * C + 16 * C * C  # patch merging: LayerNorm(8C) + Linear 8C -> 2C, no bias

    def up(c_in: int, skip: int, c_out: int) -> int:
        return conv(c_in + skip, c_out, bias=False) + conv(c_out, c_out, bias=False)

    E = embed
    n += up(8 * E, 4 * E, 4 * E) + up(4 * E, 2 * E, 2 * E) + up(2 * E, E, E) + up(E, E // 2, head_chan)
    n += conv(2, E // 2, bias=False) + conv(2, head_chan, bias=False)  # c1 and the unused c2
    return n + conv(head_chan, 3)


def test_parameter_count_matches_spec_and_formula() -> None:
    model = methods.build("transmorph")
    assert n_trainable(model) == SPEC_COUNT == formula_count()
    # Count is independent of the image size (relative-position tables depend on the window only).
    assert n_trainable(methods.build("transmorph", img_size=(64, 64, 64))) == SPEC_COUNT


def test_count_formula_holds_for_other_configs() -> None:
    kw = {"embed_dim": 6, "num_heads": (2, 2, 4, 4), "window_size": (2, 3, 4), "depths": (1, 2, 1, 2)}
    model = methods.build("transmorph", img_size=(32, 32, 32), mlp_ratio=2.0, **kw)
    assert n_trainable(model) == formula_count(6, (1, 2, 1, 2), (2, 2, 4, 4), (2, 3, 4), mlp_ratio=2)


def test_drop_path() -> None:
    torch.manual_seed(0)
    x = torch.ones(4000, 3, 2)
    layer = DropPath(0.3)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    y = layer(x)
    per_sample = y.flatten(1)
    # Whole samples are kept (scaled by 1/0.7) or zeroed.
    assert torch.all((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(1))
    dropped = (per_sample[:, 0] == 0).float().mean().item()
    assert abs(dropped - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 4000)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_window_partition_layout_and_round_trip() -> None:
    x = torch.randn(2, 4, 6, 8, 3)
    windows = window_partition(x, (2, 3, 4))
    assert windows.shape == (2 * 2 * 2 * 2, 24, 3)
    torch.testing.assert_close(windows[0], x[0, :2, :3, :4].reshape(24, 3))
    # window (1, 0, 1) of sample 1: index 2*2*2 + 1*4 + 0*2 + 1
    torch.testing.assert_close(windows[8 + 5], x[1, 2:4, 0:3, 4:8].reshape(24, 3))
    assert torch.equal(window_merge(windows, (2, 3, 4), (4, 6, 8)), x)


def test_relative_position_index_matches_brute_force() -> None:
    window = (2, 3, 4)
    coords = list(itertools.product(*[range(w) for w in window]))
    shape = tuple(2 * w - 1 for w in window)
    expected = [
        [np.ravel_multi_index(tuple(q[d] - k[d] + window[d] - 1 for d in range(3)), shape) for k in coords]
        for q in coords
    ]
    assert relative_position_index(window).tolist() == expected


def test_window_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(1)
    window, heads, dim = (2, 2, 2), 2, 8
    attn = WindowAttention(dim, heads, window).double()
    mask = shifted_window_mask((4, 4, 4), window, (1, 1, 1)).double()  # [8, 8, 8]
    x = torch.randn(2 * 8, 8, dim, dtype=torch.double)  # batch 2, 8 windows each, sample-major
    q, k, v = attn.qkv(x).view(16, 8, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    table = attn.rel_bias.detach().numpy()
    bias = torch.tensor(
        [[[table[relative_position_index(window)[i, j], h] for j in range(8)] for i in range(8)] for h in range(heads)]
    )
    logits = q @ k.transpose(-1, -2) / math.sqrt(dim // heads) + bias + mask.repeat(2, 1, 1).unsqueeze(1)
    expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(16, 8, dim))
    torch.testing.assert_close(attn(x, mask), expected)


def segment_ids(n: int, window: int, shift: int) -> list[int]:
    """Effective window of each position along one axis: cut at shift + k * window (0 cut too if shift=0)."""
    return [(i - shift) // window + 1 for i in range(n)]


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 1)])
def test_swin_block_token_dependencies_follow_the_window_layout(shift: tuple[int, int, int]) -> None:
    """Output token p depends on input token q != p iff both lie in the same (shifted) window.

    Grid 4x4x3 with window 2 (the last axis is zero-padded to 4): unshifted windows are cut at 0, 2;
    shifted ones (with the cyclic roll and the Swin mask) at 1, 3 -- wrapped neighbours never interact.
    """
    torch.manual_seed(2)
    grid, window = (4, 4, 3), (2, 2, 2)
    block = SwinBlock(8, 2, window, shift, 2.0, 0.0).double().eval()
    padded = (4, 4, 4)
    mask = shifted_window_mask(padded, window, (1, 1, 1)) if any(shift) else None
    x = torch.randn(1, *grid, 8, dtype=torch.double)
    base = block(x, mask)
    ids = [segment_ids(n, 2, s) for n, s in zip(grid, shift, strict=True)]
    tokens = list(itertools.product(*[range(n) for n in grid]))
    for q in tokens:
        xq = x.clone()
        xq[(0, *q)] += torch.randn(8, dtype=torch.double)  # not constant: LayerNorm would cancel it
        changed = (block(xq, mask) - base).abs().amax(-1)[0] > 1e-9
        for p in tokens:
            same = all(ids[d][p[d]] == ids[d][q[d]] for d in range(3))
            assert bool(changed[p]) == same, (p, q)


def test_shifted_window_mask_regions() -> None:
    mask = shifted_window_mask((4, 2, 2), (2, 2, 2), (1, 0, 0))
    assert mask.shape == (2, 8, 8)
    assert torch.count_nonzero(mask[0]) == 0  # first window: no wrapped tokens
    # Last window along x holds x=3 (region 1) and the wrapped x=0 (region 2): tokens with different x
    # (the first C-order index) are masked from each other.
    x_of_token = torch.arange(8) // 4
    expected = (x_of_token[:, None] != x_of_token[None, :]).float() * -100.0
    assert torch.equal(mask[1], expected)


def test_patch_merging_gathers_2x2x2_neighbours() -> None:
    torch.manual_seed(3)
    merge = PatchMerging(4).double()
    x = torch.randn(1, 4, 4, 2, 4, dtype=torch.double)
    base = merge(x)
    assert base.shape == (1, 2, 2, 1, 8)
    for q in itertools.product(range(4), range(4), range(2)):
        xq = x.clone()
        xq[(0, *q)] += torch.randn(4, dtype=torch.double)
        changed = ((merge(xq) - base).abs().amax(-1)[0] > 1e-12).nonzero().tolist()
        assert changed == [[q[0] // 2, q[1] // 2, q[2] // 2]]


def test_forward_backward_with_small_window() -> None:
    torch.manual_seed(4)
    size = (64, 64, 64)
    # No drop path here: a dropped residual branch would (correctly) get zero gradients.
    model = methods.build("transmorph", img_size=size, window_size=SMALL_WINDOW, drop_path_rate=0.0)
    seen: dict[str, torch.Size] = {}
    model.flow.register_forward_hook(lambda mod, inp, out: seen.update(head_in=inp[0].shape))
    disp = model(torch.rand(1, 1, *size), torch.rand(1, 1, *size)).disp
    assert disp.shape == (1, 3, *size)
    assert seen["head_in"] == (1, 16, 32, 32, 32)  # flow predicted at half resolution
    assert disp.abs().max() < 1e-2  # N(0, 1e-5) head: near-zero initial displacement
    (disp - 0.5).square().mean().backward()
    # Stage 3 sees a 2x2x2 token grid: with window 2 and shift 1 the Swin mask isolates every token, so
    # the shifted block attends each token to itself only and its position bias gets no gradient.
    isolated = "encoder.stages.3.blocks.1.attn.rel_bias"
    for name, p in model.named_parameters():
        if name.startswith("unused_conv_skip."):
            assert p.grad is None  # upstream's c2: counted, never used
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad.abs().sum() > 0) == (name != isolated), name


@pytest.mark.parametrize("window", [SMALL_WINDOW, (5, 6, 7)])
def test_batch_items_are_independent_and_padding_works(window: tuple[int, int, int]) -> None:
    """Batch of 2 equals each item alone; with (5, 6, 7) every stage pads (token grids 8x8x16 … 1x1x2)."""
    torch.manual_seed(5)
    size = (32, 32, 64)
    model = methods.build("transmorph", img_size=size, window_size=window, **NARROW).eval()
    with torch.no_grad():
        model.flow.weight.normal_(0.0, 0.05)  # larger head so that differences would show
        moving, fixed = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
        both = model(moving, fixed).disp
        first = model(moving[:1], fixed[:1]).disp
        second = model(moving[1:], fixed[1:]).disp
    assert both.shape == (2, 3, *size) and torch.isfinite(both).all()
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-4, atol=1e-5)
    assert (first - second).abs().max() > 1e-3


def test_checkpointing_gives_same_output_and_gradients() -> None:
    torch.manual_seed(6)
    size = (32, 32, 32)
    kw = {"img_size": size, "window_size": SMALL_WINDOW, **NARROW}
    plain = methods.build("transmorph", **kw)
    ckpt = methods.build("transmorph", use_checkpoint=True, **kw)
    ckpt.load_state_dict(plain.state_dict())
    moving, fixed = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    for model in (plain, ckpt):  # training mode: drop path on; same seed => same dropped branches,
        torch.manual_seed(8)  # and the recomputation inside checkpoint must replay them
        model(moving, fixed).disp.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-12, msg=name)


def test_rebuild_from_config_gives_identical_output() -> None:
    torch.manual_seed(7)
    size = (32, 32, 64)
    model = methods.build("transmorph", img_size=size, window_size=SMALL_WINDOW, **NARROW)
    config = json.loads(json.dumps(model.config))  # what a checkpoint stores
    assert config["img_size"] == [32, 32, 64] and config["window_size"] == [2, 2, 2]
    clone = methods.build("transmorph", **config)
    assert isinstance(clone, TransMorph)
    clone.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    clone.eval()
    moving, fixed = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    with torch.no_grad():
        assert torch.equal(model(moving, fixed).disp, clone(moving, fixed).disp)


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="3 positive sides"):
        methods.build("transmorph", img_size=(160, 224))
    with pytest.raises(ValueError, match="4 stages"):
        methods.build("transmorph", depths=(2, 2, 2))


def test_sizes_not_divisible_by_32_are_padded_and_cropped() -> None:
    torch.manual_seed(0)
    model = methods.build("transmorph", img_size=(48, 32, 40), window_size=SMALL_WINDOW, embed_dim=24).eval()
    moving, fixed = torch.rand(1, 1, 48, 32, 40), torch.rand(1, 1, 48, 32, 40)
    with torch.no_grad():
        out = model(moving, fixed).disp
        padded = model(*(F.pad(t, (0, 24, 0, 0, 0, 16)) for t in (moving, fixed))).disp
    assert out.shape == (1, 3, 48, 32, 40)
    # The same as running on the explicitly zero-padded 64×32×64 input and cropping.
    assert torch.allclose(out, padded[:, :, :48, :, :40], atol=1e-6)
