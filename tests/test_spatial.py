"""Spatial core: torch warp vs scipy map_coordinates, composition, flow resizing, Jacobians."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dirbench.warp import warp_array
from scipy.ndimage import gaussian_filter, map_coordinates

from methods.spatial import compose, identity_grid, jacobian_det, resize_flow, warp


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], amp: float, sigma: float) -> np.ndarray:
    """Random smooth displacement ``[3, X, Y, Z]`` with max |u| ≈ amp voxels."""
    field = np.stack([gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)])
    return (amp * field / np.abs(field).max()).astype(np.float32)


def test_identity_grid_holds_voxel_indices() -> None:
    grid = identity_grid((3, 4, 5))
    assert grid.shape == (1, 3, 3, 4, 5)
    assert grid[0, 0, 2, 1, 3] == 2 and grid[0, 1, 2, 1, 3] == 1 and grid[0, 2, 2, 1, 3] == 3


@pytest.mark.parametrize("shape", [(24, 32, 20), (40, 28, 36)])
def test_bilinear_warp_matches_map_coordinates(rng: np.random.Generator, shape: tuple[int, int, int]) -> None:
    image = gaussian_filter(rng.random(shape), 1.5).astype(np.float32)
    disp = smooth_field(rng, shape, amp=4.0, sigma=4.0)
    ours = warp(torch.from_numpy(image)[None, None], torch.from_numpy(disp)[None], padding_mode="zeros")
    ours = ours[0, 0].numpy()
    ref = warp_array(image, disp, order=1)
    # Away from the border (where sample points may leave the volume) the two must agree.
    m = 5
    inner = (slice(m, -m),) * 3
    assert np.abs(ours[inner] - ref[inner]).max() < 1e-4
    # Everywhere, grid_sample's zero padding is scipy's 'grid-constant' mode (interpolation with zeros
    # beyond the edge), while 'constant' (the evaluators') drops samples outside [0, n-1] altogether.
    coords = np.indices(shape, dtype=np.float64) + disp
    grid_const = map_coordinates(image.astype(np.float64), coords, order=1, mode="grid-constant", cval=0)
    assert np.abs(ours - grid_const).max() < 1e-4


def test_nearest_warp_matches_map_coordinates_except_ties(rng: np.random.Generator) -> None:
    shape = (24, 28, 20)
    labels = rng.integers(0, 6, size=shape).astype(np.float32)
    disp = smooth_field(rng, shape, amp=3.0, sigma=3.0)
    ours = warp(torch.from_numpy(labels)[None, None], torch.from_numpy(disp)[None], "nearest", padding_mode="zeros")
    ref = warp_array(labels, disp, order=0)
    coords = np.indices(shape) + disp.astype(np.float64)
    frac = np.abs(coords - np.floor(coords) - 0.5)
    tie = (frac < 1e-4).any(axis=0)
    inside = np.all((coords >= 0) & (coords <= np.array(shape).reshape(3, 1, 1, 1) - 1), axis=0)
    differ = (ours[0, 0].numpy() != ref) & inside
    assert differ.sum() == (differ & tie).sum()
    assert (inside & ~tie).sum() > 0.8 * labels.size


def test_compose_with_integer_translation_equals_shifting(rng: np.random.Generator) -> None:
    shape = (20, 24, 16)
    u1 = torch.from_numpy(smooth_field(rng, shape, amp=2.0, sigma=3.0))[None]
    t = torch.zeros(1, 3, *shape)
    t[:, 0], t[:, 2] = 2.0, -1.0  # φ2(x) = x + (2, 0, -1)
    total = compose(u1, t)
    expected = t + torch.roll(u1, shifts=(-2, 1), dims=(2, 4))
    inner = (slice(None), slice(None), slice(0, shape[0] - 2), slice(None), slice(1, None))
    assert torch.allclose(total[inner], expected[inner], atol=1e-5)
    # Images: warping by the composition equals warping twice.
    image = torch.from_numpy(gaussian_filter(rng.random(shape), 2.0).astype(np.float32))[None, None]
    twice = warp(warp(image, u1), t)
    once = warp(image, total)
    assert torch.allclose(once[inner], twice[inner], atol=1e-5)


def test_resize_flow_of_constant_field_doubles_it() -> None:
    disp = torch.zeros(1, 3, 4, 6, 5)
    disp[:, 0], disp[:, 1], disp[:, 2] = 1.5, -0.25, 3.0
    up = resize_flow(disp, 2.0)
    assert up.shape == (1, 3, 8, 12, 10)
    for c, v in enumerate((3.0, -0.5, 6.0)):
        assert torch.allclose(up[:, c], torch.full_like(up[:, c], v))


def test_jacobian_det_of_linear_map_is_analytic() -> None:
    shape = (10, 12, 8)
    grid = identity_grid(shape)
    A = torch.tensor([[0.2, 0.1, 0.0], [0.0, -0.3, 0.05], [0.1, 0.0, 0.4]])
    disp = torch.einsum("ij,bjxyz->bixyz", A, grid)
    expected = torch.linalg.det(torch.eye(3) + A)
    assert torch.allclose(jacobian_det(disp), expected.expand(1, *shape), atol=1e-5)
    assert torch.allclose(jacobian_det(torch.zeros(1, 3, *shape)), torch.ones(1, *shape))
