"""The channels-last instance norm (+ LeakyReLU) against the stock functions, and the channels-last blocks against a
literal contiguous formulation: same values and gradients (float64), also where |mean| ≫ std."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_same_function

from methods.blocks import ResidualBlock, cpu_channels_last
from methods.correlation import correlation
from methods.instance_norm import instance_norm_act
from methods.spatial import identity_grid, sampling_grid

CL = torch.channels_last_3d


def literal(x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, slope: float | None) -> torch.Tensor:
    out = F.instance_norm(x.contiguous(), weight=w, bias=b, eps=1e-5)
    return out if slope is None else F.leaky_relu(out, slope)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("offset", [0.0, 40.0])  # a large mean: the backward must centre before summing
def test_instance_norm_act_equals_the_stock_functions(
    batch: int, slope: float | None, affine: bool, offset: float
) -> None:
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 5, 7, 6, 4, generator=gen, dtype=torch.float64) * 2 + offset
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    w = (torch.rand(5, generator=gen, dtype=torch.float64) + 0.5) if affine else None
    b = torch.randn(5, generator=gen, dtype=torch.float64) if affine else None
    params = [p.requires_grad_() for p in (w, b) if p is not None]
    xs = x.contiguous(memory_format=CL).requires_grad_()
    xr = x.clone().requires_grad_()
    out = instance_norm_act(xs, w, b, 1e-5, slope)
    ref = literal(xr, w, b, slope)
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # the gradient is given channels-last (as the next conv's backward returns it) and contiguous
    for grad in (g.contiguous(memory_format=CL), g):
        got = torch.autograd.grad(out, [xs, *params], grad, retain_graph=True)
        want = torch.autograd.grad(ref, [xr, *params], g, retain_graph=True)
        for a, e in zip(got, want, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


def test_instance_norm_act_float32_matches_float64() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 24, 20, 16, generator=gen) * 3 + 1
    g = torch.randn(x.shape, generator=gen)
    w, b = torch.rand(16, generator=gen) + 0.5, torch.randn(16, generator=gen)
    xs = x.contiguous(memory_format=CL).requires_grad_()
    xd = x.double().requires_grad_()
    out = instance_norm_act(xs, w, b, 1e-5, 0.2)
    ref = literal(xd, w.double(), b.double(), 0.2)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    (gs,) = torch.autograd.grad(out, xs, g)
    (gd,) = torch.autograd.grad(ref, xd, g.double())
    torch.testing.assert_close(gs.double(), gd, rtol=1e-4, atol=1e-5 * float(gd.abs().max()))


def test_contiguous_inputs_take_the_stock_path() -> None:
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(instance_norm_act(x, None, None, 1e-5, 0.2), literal(x, None, None, 0.2))


def test_residual_block_equals_the_literal_contiguous_block() -> None:
    """conv → IN → LReLU(0.2) → conv → IN, plus the 1³ conv + IN skip, sum, LReLU; values and every gradient."""
    torch.manual_seed(0)
    block = ResidualBlock(4, 6, stride=2).double()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_()
    x = torch.randn(2, 4, 12, 10, 8, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()

    def conv(layer: torch.nn.Conv3d, t: torch.Tensor) -> torch.Tensor:
        return F.conv3d(t, layer.weight, layer.bias, layer.stride, layer.padding)

    def norm(layer: torch.nn.InstanceNorm3d, t: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(t, weight=layer.weight, bias=layer.bias, eps=layer.eps)

    h = F.leaky_relu(norm(block.norm1, conv(block.conv1, xr)), 0.2)
    ref = F.leaky_relu(norm(block.norm2, conv(block.conv2, h)) + norm(block.skip_norm, conv(block.skip, xr)), 0.2)
    assert_same_function(block(x), ref, [x], [xr], list(block.parameters()))


def test_correlation_is_layout_independent() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = (torch.randn(2, 5, 6, 7, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    g = torch.randn(2, 27, 6, 7, 4, generator=gen, dtype=torch.float64)
    results = []
    for layout in (lambda t: t, cpu_channels_last):
        xs, ys = layout(x).requires_grad_(), layout(y).requires_grad_()
        out = correlation(xs, ys)
        results.append((out, *torch.autograd.grad(out, (xs, ys), g)))
    assert results[1][0].is_contiguous(memory_format=CL)
    for a, e in zip(*results, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_sampling_grid_normalises_identity_plus_displacement() -> None:
    gen = torch.Generator().manual_seed(2)
    disp = torch.randn(2, 3, 5, 6, 7, generator=gen, dtype=torch.float64)
    image_shape = (9, 6, 11)
    coords = identity_grid(disp.shape[2:], dtype=torch.float64) + disp
    sizes = torch.tensor([2.0 / (n - 1) for n in image_shape], dtype=torch.float64).view(1, 3, 1, 1, 1)
    expected = (coords * sizes - 1.0).movedim(1, -1).flip(-1)
    torch.testing.assert_close(sampling_grid(disp, image_shape), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(sampling_grid(cpu_channels_last(disp), image_shape), expected, rtol=0, atol=1e-15)
