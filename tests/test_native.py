"""Native images through a model (dirbench.native): grid maths, exactness, orientation/spacing invariance, checks.

The invariance test registers one pair given twice, RAS at 1 mm (on the model's grid) and LIA at 1.2 mm
(moving on a third, LPI 1.1 mm grid), through :meth:`Registrar.from_model` with a deterministic,
content-driven stand-in network (Thirion's demons), and compares the two physical deformations.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dirbench.errors import UserError
from dirbench.inference import Registrar
from dirbench.io import reorient, reorient_disp
from dirbench.native import (
    Grid,
    NativeImage,
    NativePipeline,
    field_to_native,
    image_modality,
    model_grid,
    to_model,
)
from dirbench.run_record import Preprocessing
from dirbench.warp import warp_array
from scipy.ndimage import affine_transform, gaussian_filter, map_coordinates

from methods import RegistrationOutput

SHAPE = (40, 48, 40)
PREP = Preprocessing(intensity_scale=1.0, shape=SHAPE, spacing=(1.0, 1.0, 1.0), modality="T1w")
ORIGIN = np.array([-20.0, -25.0, -18.0])
# Gaussian blobs (centre mm, sigma mm, amplitude) in world RAS; the moving image has them moved.
BLOBS = [((0, 0, 0), 9.0, 0.6), ((-7, 5, 3), 4.0, 0.5), ((6, -6, -2), 4.5, 0.7), ((2, 9, -7), 3.5, 0.4),
         ((-4, -10, 8), 4.0, 0.5)]
SHIFTS = [(1.0, -1.0, 0.5), (2.5, 1.0, -1.5), (-2.0, 2.0, 1.0), (1.5, -2.5, 2.0), (-1.5, 1.5, -2.0)]


def affine(codes: str, spacing: float, shape: tuple[int, ...], centre: np.ndarray) -> np.ndarray:
    """An axis-aligned affine with axis codes ``codes`` whose grid is centred on world point ``centre``."""
    world = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    out = np.eye(4)
    out[:3, :3] = 0
    for axis, code in enumerate(codes):
        row, sign = world[code]
        out[row, axis] = sign * spacing
    out[:3, 3] = centre - out[:3, :3] @ ((np.array(shape) - 1) / 2)
    return out


def render(shape: tuple[int, ...], aff: np.ndarray, moved: bool) -> np.ndarray:
    """The phantom sampled at the grid's world points (exact samples of one continuous image)."""
    world = np.tensordot(aff[:3, :3], np.indices(shape, dtype=np.float64), axes=1) + aff[:3, 3].reshape(3, 1, 1, 1)
    out = np.zeros(shape)
    for (centre, sigma, amp), shift in zip(BLOBS, SHIFTS, strict=True):
        c = np.array(centre, dtype=np.float64) + (np.array(shift) if moved else 0)
        out += amp * np.exp(-sum((world[k] - c[k]) ** 2 for k in range(3)) / (2 * sigma**2))
    return out.astype(np.float32)


class Demons(torch.nn.Module):
    """Thirion's demons (Med. Image Anal. 1998) as a stand-in network: ``[1, 1, X, Y, Z]`` pair → voxel field."""

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        m, f = moving[0, 0].double().numpy(), fixed[0, 0].double().numpy()
        grad = np.stack(np.gradient(f), axis=-1)
        v = np.zeros((*f.shape, 3))
        for _ in range(30):
            diff = warp_array(m, v)[..., None] - f[..., None]
            v -= diff * grad / ((grad**2).sum(-1, keepdims=True) + diff**2 + 1e-6)
            v = np.stack([gaussian_filter(v[..., c], 1.5) for c in range(3)], axis=-1)
        return RegistrationOutput(torch.from_numpy(v).permute(3, 0, 1, 2)[None].float())


def save(path: Path, array: np.ndarray, aff: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, aff), str(path))
    return path


def test_an_image_on_the_training_grid_passes_through_untouched(tmp_path: Path, rng: np.random.Generator) -> None:
    aff = affine("RAS", 1.0, SHAPE, np.zeros(3))
    array = rng.random(SHAPE).astype(np.float32)
    image = NativeImage.load(save(tmp_path / "f.nii.gz", array, aff))
    grid = model_grid(image, PREP)
    assert grid.same_as(image.grid)
    assert to_model(image, grid) is image.array
    v = rng.standard_normal((*SHAPE, 3)).astype(np.float32)
    assert field_to_native(v, grid, image.grid) is v


def test_reorientation_and_pad_crop_are_exact_copies(tmp_path: Path, rng: np.random.Generator) -> None:
    """Same spacing, other axis order and size: the model grid falls on the image's voxels, no interpolation."""
    ras = rng.random(SHAPE).astype(np.float32)
    ras_aff = affine("RAS", 1.0, SHAPE, np.array([3.0, -2.0, 5.0]))
    ras_grid = Grid(SHAPE, ras_aff)
    # The same image stored LIA (as OASIS): the inverse of io.reorient's LIA -> RAS.
    lia, lia_aff = reorient(ras, ras_aff, "LIA")
    image = NativeImage.load(save(tmp_path / "lia.nii.gz", lia, lia_aff))
    grid = model_grid(image, PREP)
    assert grid.same_as(ras_grid)
    assert np.array_equal(to_model(image, grid), ras)
    # The model's field goes back exactly as io.reorient_disp reorients a RAS field to LIA.
    v = rng.standard_normal((*SHAPE, 3)).astype(np.float32)
    expect, _ = reorient_disp(v, ras_aff, "LIA")
    np.testing.assert_allclose(field_to_native(v, grid, image.grid), expect, atol=1e-6)

    # Larger and smaller than the model's box: symmetric pad / crop around the image centre, copied values.
    big = rng.random((46, 44, 41)).astype(np.float32)
    image = NativeImage.load(save(tmp_path / "big.nii.gz", big, affine("RAS", 1.0, big.shape, np.zeros(3))))
    out = to_model(image, model_grid(image, PREP))
    assert np.array_equal(out[:, 2:46, :], big[3:43, :, 0:40])  # x cropped 3+3, y padded 2+2, z cropped 0+1
    assert not out[:, :2].any() and not out[:, 46:].any()

    # The copy by indexing equals scipy's interpolation at the (integer) voxel positions, flips and shifts
    # included, and an out-of-box field is continued with the nearest model voxel.
    lps_big, lps_aff = reorient(big, affine("RAS", 1.0, big.shape, np.array([0.5, 0, 0])), "LPI")
    image = NativeImage.load(save(tmp_path / "lps.nii.gz", lps_big, lps_aff))
    grid = model_grid(image, PREP)
    t = grid.to(image.grid)
    expect = affine_transform(lps_big, t[:3, :3], t[:3, 3], output_shape=SHAPE, order=1, mode="constant")
    assert np.array_equal(to_model(image, grid), expect)
    v = rng.standard_normal((*SHAPE, 3)).astype(np.float32)
    back = image.grid.to(grid)
    jac = np.linalg.solve(image.grid.affine[:3, :3], grid.affine[:3, :3])
    expect = np.stack([affine_transform(v[..., c], back[:3, :3], back[:3, 3], output_shape=big.shape, order=1,
                                        mode="nearest") for c in range(3)], axis=-1) @ jac.T
    np.testing.assert_allclose(field_to_native(v, grid, image.grid), expect, atol=1e-6)


def test_centre_of_mass_centring(tmp_path: Path) -> None:
    shape = (60, 60, 60)
    aff = affine("RAS", 1.0, shape, np.zeros(3))
    array = np.zeros(shape, np.float32)
    array[50:58, 2:10, 25:35] = 1.0  # a brick centred at voxel (53.5, 5.5, 29.5), off the image centre
    image = NativeImage.load(save(tmp_path / "brick.nii.gz", array, aff))
    _, centroid = image.mass()
    np.testing.assert_allclose(centroid, aff[:3, :3] @ [53.5, 5.5, 29.5] + aff[:3, 3])
    grid = model_grid(image, PREP, centre="mass")
    assert np.abs(grid.centre() - centroid).max() <= 0.5  # snapped to the nearest voxel centre
    assert to_model(image, grid).sum() == array.sum()  # the whole brick is inside the box
    assert to_model(image, model_grid(image, PREP, centre="image")).sum() < array.sum()


def physical(disp: np.ndarray, aff: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The physical (RAS mm) displacement of a voxel field at world points ``[3, N]``, trilinear."""
    index = np.linalg.solve(aff[:3, :3], points - aff[:3, 3:])
    sampled = np.stack([map_coordinates(disp[..., c], index, order=1, mode="nearest") for c in range(3)])
    return aff[:3, :3] @ sampled


def test_orientation_and_spacing_invariance(tmp_path: Path) -> None:
    """RAS 1 mm and LIA 1.2 mm (moving LPI 1.1 mm) give one physical deformation, within interpolation."""
    centre = ORIGIN + (np.array(SHAPE) - 1) / 2
    notes: list[str] = []
    registrar = Registrar.from_model(Demons(), PREP, "demons", torch.device("cpu"),
                                     pipeline=NativePipeline(PREP, "demons", note=notes.append))
    ras = affine("RAS", 1.0, SHAPE, centre)
    fixed_a = save(tmp_path / "fixed_ras.nii.gz", render(SHAPE, ras, False), ras)
    moving_a = save(tmp_path / "moving_ras.nii.gz", render(SHAPE, ras, True), ras)
    disp_a, _, _ = registrar(fixed_a, moving_a)
    assert not notes  # on the model grid: nothing resampled

    lia_shape = (34, 34, 40)  # L-R 40 mm, I-S 40 mm, P-A 48 mm at 1.2 mm
    lia = affine("LIA", 1.2, lia_shape, centre)
    lpi_shape = (38, 44, 36)
    lpi = affine("LPI", 1.1, lpi_shape, centre + np.array([1.3, -0.7, 0.4]))
    fixed_b = save(tmp_path / "fixed_lia.nii.gz", render(lia_shape, lia, False), lia)
    moving_b = save(tmp_path / "moving_lpi.nii.gz", render(lpi_shape, lpi, True), lpi)
    disp_b, _, _ = registrar(fixed_b, moving_b)
    assert disp_b.shape == (*lia_shape, 3) and len(notes) == 2 and "LIA" in notes[0] and "LPI" in notes[1]

    # Compare at the RAS grid's voxels 4 mm or more inside both fixed boxes.
    index = np.indices(SHAPE).reshape(3, -1)
    index = index[:, np.all(index >= 4, axis=0) & np.all(index <= np.array(SHAPE)[:, None] - 5, axis=0)]
    points = ras[:3, :3] @ index + ras[:3, 3:]
    d_a, d_b = physical(disp_a, ras, points), physical(disp_b, lia, points)
    magnitude = np.sqrt((d_a**2).sum(0).mean())
    error = np.sqrt(((d_a - d_b) ** 2).sum(0))
    print(f"invariance: RMS deformation {magnitude:.3f} mm (max {np.sqrt((d_a**2).sum(0)).max():.2f}), "
          f"RMS difference {np.sqrt((error**2).mean()):.4f} mm, max {error.max():.4f} mm")
    assert np.sqrt((d_a**2).sum(0)).max() > 2.0  # a real deformation (the blobs move by 1.2 to 3.4 mm)
    # Interpolation tolerance: the 1.2 mm samples are interpolated onto the 1 mm model grid.
    assert np.sqrt((error**2).mean()) < 0.1 * magnitude and error.max() < 0.5
    # The comparison discriminates: reading the LIA field as if it were RAS voxels is far off.
    naive = np.stack([map_coordinates(disp_b[..., c], np.linalg.solve(lia[:3, :3], points - lia[:3, 3:]), order=1)
                      for c in range(3)])
    assert np.sqrt(((d_a - naive) ** 2).sum(0).mean()) > 0.5 * magnitude

    # Orientation alone changes nothing: the same 1.2 mm pair stored RAS gives the same deformation.
    ras12 = affine("RAS", 1.2, (34, 40, 34), centre)
    fixed_c = save(tmp_path / "fixed_ras12.nii.gz", render((34, 40, 34), ras12, False), ras12)
    disp_c, _, _ = registrar(fixed_c, moving_b)
    np.testing.assert_allclose(physical(disp_c, ras12, points), d_b, atol=1e-4)


def test_bad_inputs_name_the_file_and_the_problem(tmp_path: Path) -> None:
    aff = affine("RAS", 1.0, SHAPE, np.zeros(3))
    good = save(tmp_path / "good.nii.gz", render(SHAPE, aff, False), aff)
    four_d = save(tmp_path / "fmri.nii.gz", np.zeros((*SHAPE[:3], 5), np.float32), aff)
    with pytest.raises(UserError, match=r"fmri.nii.gz: expected a 3-D array, got shape \(40, 48, 40, 5\)"):
        NativeImage.load(four_d)
    singular = aff.copy()
    singular[2, 2] = 0.0  # nibabel refuses such an affine for the qform; write it as the sform only
    img = nib.Nifti1Image(np.ones(SHAPE, np.float32), None)
    img.header.set_sform(singular, code=1)
    nib.save(img, str(flat := tmp_path / "flat.nii.gz"))
    with pytest.raises(UserError, match=r"flat\.nii\.gz: the voxel-to-world affine is not invertible"):
        NativeImage.load(flat)

    pipeline = NativePipeline(PREP, "ckpt.pt", note=(notes := []).append)
    far = save(tmp_path / "far.nii.gz", render(SHAPE, aff, False), affine("RAS", 1.0, SHAPE, np.array([0, 150, 0])))
    with pytest.raises(UserError, match=r"far.nii.gz: only 0.0% of its intensity lies inside the model's field of "
                                        r"view \(40×48×40 mm box centred at \(0.0, 0.0, 0.0\) mm\).*149 mm from"):
        pipeline.prepare(good, far)
    near = save(tmp_path / "near.nii.gz", render(SHAPE, aff, False), affine("RAS", 1.0, SHAPE, np.array([0, 0, 14.0])))
    pipeline.prepare(good, near)
    assert any(n.startswith(f"warning: {near}: only ") for n in notes)  # part outside: a warning with figures

    t2 = save(tmp_path / "sub-01_T2w.nii.gz", render(SHAPE, aff, False), aff)
    with pytest.raises(UserError, match=r"sub-01_T2w.nii.gz: a T2w image \(from its BIDS file name\), but ckpt.pt "
                                        r"was trained on T1w images"):
        pipeline.prepare(good, t2)
    NativePipeline(PREP, "ckpt.pt", modality="any", note=notes.append).prepare(good, t2)
    assert image_modality("sub-01_ses-1_T1w.nii.gz") == "T1w" and image_modality("img0001.nii.gz") is None

    coarse_aff = affine("RAS", 3.0, (14, 16, 14), np.zeros(3))
    coarse = save(tmp_path / "coarse.nii.gz", render((14, 16, 14), coarse_aff, False), coarse_aff)
    notes.clear()
    pipeline.prepare(coarse, good)
    assert any(f"warning: {coarse}: voxels of 3×3×3 mm, but ckpt.pt was trained on 1×1×1 mm" in n for n in notes)

    bright = save(tmp_path / "bright.nii.gz", 1000 * render(SHAPE, aff, False), aff)
    notes.clear()
    pair = pipeline.prepare(bright, good)
    assert any("pass --normalise" in n for n in notes)
    pair = NativePipeline(PREP, "ckpt.pt", normalise=True, note=notes.append).prepare(bright, good)
    assert pair.fixed.min() == 0 and pair.fixed.max() == 1
