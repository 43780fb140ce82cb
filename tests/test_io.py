"""NIfTI I/O: round trips, clear errors naming the file, LIA → RAS reorientation."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dirbench import io
from dirbench.errors import UserError
from dirbench.warp import warp_array

#: The neurite / Learn2Reg 2021 OASIS affine (LIA+), 160×192×224.
OASIS_LIA = np.array([[-1.0, 0, 0, 80], [0, 0, 1, -112], [0, -1, 0, 96], [0, 0, 0, 1]])


def test_disp_round_trip_is_float32_channels_last(tmp_path: Path, rng: np.random.Generator) -> None:
    disp = rng.standard_normal((6, 7, 5, 3)).astype(np.float64)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    path = tmp_path / "disp.nii.gz"
    io.save_disp(path, np.moveaxis(disp, -1, 0), affine)  # channel-first input is accepted
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.float32 and img.shape == (6, 7, 5, 3)
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(io.load_disp(path, shape=(6, 7, 5)), disp.astype(np.float32))
    assert not [p for p in tmp_path.iterdir() if p.name != "disp.nii.gz"], "temporary files left behind"


def test_disp_file_is_a_stored_gzip_that_every_reader_opens(tmp_path: Path, rng: np.random.Generator) -> None:
    """Displacements are gzip streams of stored blocks: valid .nii.gz (nibabel's own reader, the gzip module), the
    same values and affine as the array written, and hardly bigger than the raw data."""
    disp = rng.standard_normal((6, 5, 4, 3)).astype(np.float32)
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    path = tmp_path / "disp_0001_0002.nii.gz"
    io.save_disp(path, disp, affine)
    raw = gzip.decompress(path.read_bytes())
    assert len(raw) <= path.stat().st_size  # stored blocks: no compression
    img = nib.load(str(path))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), disp)
    np.testing.assert_array_equal(img.affine, affine)
    np.testing.assert_array_equal(io.load_disp(path), disp)


def test_nifti2_gz_and_plain_nii_are_read(tmp_path: Path, rng: np.random.Generator) -> None:
    image = rng.random((5, 4, 3)).astype(np.float32)
    nib.save(nib.Nifti2Image(image, np.eye(4)), str(tmp_path / "img0001.nii.gz"))
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "img0002.nii"))
    np.testing.assert_array_equal(io.load_image(tmp_path / "img0001.nii.gz"), image)
    np.testing.assert_array_equal(io.load_image(tmp_path / "img0002.nii"), image)


def test_corrupt_deflate_data_is_a_user_error(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "img0001.nii.gz"
    io.save_image(path, rng.random((8, 8, 8)).astype(np.float32), np.eye(4))
    data = bytearray(path.read_bytes())
    data[40:60] = bytes(20)  # inside the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"img0001\.nii\.gz: not a readable NIfTI file"):
        io.load_image(path)


def test_channel_first_disp_file_is_transposed_on_load(tmp_path: Path, rng: np.random.Generator) -> None:
    disp = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(disp, np.eye(4)), str(tmp_path / "d.nii.gz"))
    np.testing.assert_array_equal(io.load_disp(tmp_path / "d.nii.gz"), np.moveaxis(disp, 0, -1))


def test_labels_and_images_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = rng.integers(0, 36, size=(5, 6, 7))
    io.save_labels(tmp_path / "seg.nii.gz", labels, np.eye(4))
    assert nib.load(str(tmp_path / "seg.nii.gz")).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(io.load_labels(tmp_path / "seg.nii.gz"), labels)
    image = rng.random((5, 6, 7)).astype(np.float32)
    io.save_image(tmp_path / "img.nii.gz", image, np.eye(4))
    np.testing.assert_array_equal(io.load_image(tmp_path / "img.nii.gz", shape=(5, 6, 7)), image)


def test_truncated_file_error_names_the_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "img.nii.gz"
    io.save_image(path, rng.random((20, 20, 20)).astype(np.float32), np.eye(4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"img\.nii\.gz.*(corrupt|truncated)"):
        io.load_image(path)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(UserError, match=r"junk\.nii\.gz"):
        io.load_image(tmp_path / "junk.nii.gz")
    with pytest.raises(UserError, match=r"missing\.nii\.gz: file not found"):
        io.load_labels(tmp_path / "missing.nii.gz")


def test_wrong_shape_and_non_finite_are_rejected(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), str(tmp_path / "d.nii.gz"))
    with pytest.raises(UserError, match=r"d\.nii\.gz: expected a displacement \[X, Y, Z, 3\]"):
        io.load_disp(tmp_path / "d.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(tmp_path / "i.nii.gz"))
    with pytest.raises(UserError, match=r"i\.nii\.gz: expected spatial shape \(5, 4, 4\)"):
        io.load_image(tmp_path / "i.nii.gz", shape=(5, 4, 4))
    bad = np.zeros((4, 4, 4, 3), np.float32)
    bad[1, 2, 3, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(UserError, match=r"nan\.nii\.gz: 1 non-finite"):
        io.load_disp(tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 1.5, np.float32), np.eye(4)), str(tmp_path / "s.nii.gz"))
    with pytest.raises(UserError, match="non-integer"):
        io.load_labels(tmp_path / "s.nii.gz")


def test_lia_to_ras_matches_the_papers_transform_and_round_trips(rng: np.random.Generator) -> None:
    x = rng.random((8, 12, 10))
    ras, ras_affine = io.reorient(x, OASIS_LIA)
    np.testing.assert_array_equal(ras, np.flip(np.flip(x.transpose(0, 2, 1), 0), 2))
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    # The world position of every voxel is unchanged.
    i, j, k = 3, 5, 7
    world = OASIS_LIA @ [i, j, k, 1]
    ii, jj, kk = np.argwhere(ras == x[i, j, k])[0]
    np.testing.assert_allclose(ras_affine @ [ii, jj, kk, 1], world)
    back, back_affine = io.reorient(ras, ras_affine, target="LIA")
    np.testing.assert_array_equal(back, x)
    np.testing.assert_allclose(back_affine, OASIS_LIA)


def test_reoriented_field_moves_reoriented_images_identically(rng: np.random.Generator) -> None:
    shape = (10, 14, 12)
    moving = rng.integers(0, 5, size=shape)
    disp = rng.integers(-2, 3, size=(*shape, 3)).astype(np.float32)  # integer: nearest warping is exact
    warped = warp_array(moving, disp, order=0)
    moving_ras, _ = io.reorient(moving, OASIS_LIA)
    disp_ras, _ = io.reorient_disp(disp, OASIS_LIA)
    warped_ras, _ = io.reorient(warped, OASIS_LIA)
    np.testing.assert_array_equal(warp_array(moving_ras, disp_ras, order=0), warped_ras)
    back, _ = io.reorient_disp(disp_ras, io.reorient(moving, OASIS_LIA)[1], target="LIA")
    np.testing.assert_array_equal(back, disp)
