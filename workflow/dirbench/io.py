"""NIfTI I/O through nibabel, with checks that name the file and the problem, and atomic writes.

Array conventions (``ARCHITECTURE.md``):

- images: ``[X, Y, Z]`` float32;
- label maps: ``[X, Y, Z]`` integer (int32 in memory, stored as int16/uint8 where they fit);
- displacements: ``[X, Y, Z, 3]`` float32 voxel units on the fixed grid, stored with the fixed image's
  affine (``[3, X, Y, Z]`` files, as LUMIR accepts, are transposed on load).

OASIS (neurite / Learn2Reg 2021 release) is stored LIA 160×192×224; the paper, and every metric here,
works on the RAS 160×224×192 arrays. :func:`reorient` converts images, labels (voxel permutation and
flips) and :func:`reorient_disp` displacements (the same, plus the matching component permutation and
sign flips).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import aff2axcodes, axcodes2ornt, inv_ornt_aff, ornt_transform

from dirbench.errors import UserError

__all__ = [
    "atomic_path",
    "load_affine",
    "load_disp",
    "load_image",
    "load_labels",
    "load_spacing",
    "orientation_transform",
    "reorient",
    "reorient_disp",
    "save_disp",
    "save_image",
    "save_labels",
]

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffixes (``.nii.gz``), so writers that infer the format from
    the name work. Nothing is left behind on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.removesuffix(suffix)}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _gunzip(raw: bytes) -> bytes:
    """Decompress a gzip stream: ISA-L's ``igzip`` (python-isal, several times faster than zlib) when installed."""
    try:
        from isal import igzip, igzip_lib
    except ImportError:  # optional speed-up
        return gzip.decompress(raw)
    try:
        return igzip.decompress(raw)
    except igzip_lib.IsalError as err:  # corrupt deflate data: the same error as zlib's
        raise zlib.error(str(err)) from None


def _read_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    """The nibabel image of ``path``; a ``.nii.gz`` is decompressed in one call (:func:`_gunzip`) and parsed by
    nibabel from memory (NIfTI-1 or -2 by the header size), anything else goes through ``nib.load``."""
    if not path.name.endswith(".nii.gz"):
        return nib.load(str(path))
    raw = _gunzip(path.read_bytes())
    sizeof_hdr = int.from_bytes(raw[:4], "little")
    if sizeof_hdr not in (348, 540):
        sizeof_hdr = int.from_bytes(raw[:4], "big")
    klass = nib.Nifti2Image if sizeof_hdr == 540 else nib.Nifti1Image
    return klass.from_bytes(raw)


def _load(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read data (as stored, scaled if the header says so) and affine, turning failures into UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        img = _read_nifti(path)
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise UserError(f"{path}: not a readable NIfTI file (corrupt or truncated?): {err}") from None
    return data, np.asarray(img.affine, dtype=np.float64)


def _check_shape(path: PathLike, data: np.ndarray, ndim: int, shape: tuple[int, ...] | None) -> None:
    if data.ndim != ndim:
        raise UserError(f"{path}: expected a {ndim}-D array, got shape {tuple(data.shape)}")
    if shape is not None and tuple(data.shape[:3]) != tuple(shape):
        raise UserError(f"{path}: expected spatial shape {tuple(shape)}, got {tuple(data.shape[:3])}")


def _check_finite(path: PathLike, data: np.ndarray) -> None:
    if not np.isfinite(data).all():
        bad = int(data.size - np.isfinite(data).sum())
        raise UserError(f"{path}: {bad} non-finite value(s) (NaN or inf)")


def _open_header(path: PathLike) -> nib.spatialimages.SpatialImage:
    """The nibabel image of a NIfTI file (header and affine read, voxels not), turning failures into UserError."""
    path = Path(path)
    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise UserError(f"{path}: not a readable NIfTI file: {err}") from None


def load_affine(path: PathLike) -> np.ndarray:
    """The 4×4 voxel-to-world affine of a NIfTI file."""
    return np.asarray(_open_header(path).affine, dtype=np.float64)


def load_spacing(path: PathLike) -> tuple[float, float, float]:
    """The voxel size in mm of a NIfTI file's first three axes (header ``pixdim``, as nibabel's ``get_zooms``)."""
    zooms = _open_header(path).header.get_zooms()
    spacing = tuple(float(z) for z in zooms[:3])
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise UserError(f"{path}: header voxel size {tuple(zooms)} is not 3 positive numbers")
    return spacing  # type: ignore[return-value]


def load_image(path: PathLike, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Load a 3-D intensity image as float32 ``[X, Y, Z]``; a trailing singleton 4th axis is dropped."""
    data, _ = _load(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    _check_shape(path, data, 3, shape)
    if not (np.issubdtype(data.dtype, np.number) and not np.issubdtype(data.dtype, np.complexfloating)):
        raise UserError(f"{path}: image dtype {data.dtype} is not a real number type")
    data = data.astype(np.float32, copy=False)
    _check_finite(path, data)
    return data


def load_labels(path: PathLike, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Load a label map as int32 ``[X, Y, Z]``; floats are accepted only if they hold whole numbers."""
    data, _ = _load(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    _check_shape(path, data, 3, shape)
    if np.issubdtype(data.dtype, np.floating):
        _check_finite(path, data)
        if not np.array_equal(data, np.round(data)):
            raise UserError(f"{path}: label map has non-integer values (dtype {data.dtype})")
    elif not np.issubdtype(data.dtype, np.integer):
        raise UserError(f"{path}: label dtype {data.dtype} is not an integer type")
    if data.size and (data.min() < np.iinfo(np.int32).min or data.max() > np.iinfo(np.int32).max):
        raise UserError(f"{path}: label values overflow int32")
    return data.astype(np.int32, copy=False)


def load_disp(path: PathLike, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Load a displacement as float32 ``[X, Y, Z, 3]`` (voxel units); ``[3, X, Y, Z]`` is transposed."""
    data, _ = _load(path)
    if data.ndim == 5:
        raise UserError(
            f"{path}: a 5-D [X, Y, Z, 1, 3] vector image (an ITK / ANTs / Greedy warp in mm, LPS?) is not a voxel "
            "displacement; convert it with `dirbench export --format dirbench`"
        )
    if data.ndim == 4 and data.shape[-1] != 3 and data.shape[0] == 3:
        data = np.moveaxis(data, 0, -1)
    if data.ndim != 4 or data.shape[-1] != 3:
        raise UserError(f"{path}: expected a displacement [X, Y, Z, 3], got shape {tuple(data.shape)}")
    _check_shape(path, data, 4, shape)
    if not np.issubdtype(data.dtype, np.floating):
        raise UserError(f"{path}: displacement dtype {data.dtype} is not floating point")
    data = data.astype(np.float32, copy=False)
    _check_finite(path, data)
    return data


def _save(path: PathLike, data: np.ndarray, affine: np.ndarray, dtype: np.dtype, stored: bool = False) -> None:
    """Write a NIfTI-1 file through nibabel, atomically. ``stored``: a ``.nii.gz`` is written as a gzip stream of
    stored (uncompressed) deflate blocks, still a valid ``.nii.gz`` for every reader (see :func:`save_disp`)."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        if stored and tmp.name.endswith(".nii.gz"):
            tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=0, mtime=0))
        else:
            nib.save(img, str(tmp))


def save_image(path: PathLike, image: np.ndarray, affine: np.ndarray) -> None:
    """Write a float32 ``[X, Y, Z]`` image atomically."""
    _save(path, image, affine, np.dtype(np.float32))


def save_labels(path: PathLike, labels: np.ndarray, affine: np.ndarray) -> None:
    """Write an integer ``[X, Y, Z]`` label map atomically (uint8 or int16 where the values fit)."""
    labels = np.asarray(labels)
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    dtype = np.uint8 if lo >= 0 and hi <= 255 else np.int16 if lo >= -32768 and hi <= 32767 else np.int32
    _save(path, labels, affine, np.dtype(dtype))


def save_disp(path: PathLike, disp: np.ndarray, affine: np.ndarray) -> None:
    """Write a displacement as float32 ``[X, Y, Z, 3]`` with the fixed image's affine, atomically.

    Accepts ``[X, Y, Z, 3]`` or ``[3, X, Y, Z]`` (the torch channel-first layout of one batch item). A ``.nii.gz``
    is a gzip stream of stored deflate blocks (gzip level 0): dense float32 fields compress by only ~7 % at level
    1, which costs ~2.5 s to write and ~0.3–0.6 s to decode per 160×224×192 field, against ~0.15 s and ~0.05 s
    stored; the file is a valid ``.nii.gz`` for every reader (LUMIR's included).
    """
    disp = np.asarray(disp)
    if disp.ndim == 4 and disp.shape[-1] != 3 and disp.shape[0] == 3:
        disp = np.moveaxis(disp, 0, -1)
    if disp.ndim != 4 or disp.shape[-1] != 3:
        raise UserError(f"{path}: refusing to write displacement of shape {tuple(disp.shape)}; need [X, Y, Z, 3]")
    if not np.isfinite(disp).all():
        raise UserError(f"{path}: refusing to write a displacement with non-finite values")
    _save(path, disp, affine, np.dtype(np.float32), stored=True)


# --------------------------------------------------------------------------- orientation


def orientation_transform(affine: np.ndarray, target: str = "RAS") -> np.ndarray:
    """nibabel orientation transform (``[[axis, flip], ...]``) from ``affine``'s axes to ``target``."""
    return ornt_transform(axcodes2ornt(aff2axcodes(affine)), axcodes2ornt(tuple(target)))


def _apply(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Permute and flip the first three axes of ``arr`` by ``ornt`` (extra trailing axes are kept)."""
    # ornt[i] = (new axis of input axis i, flip); build the output axis order.
    order = [0, 0, 0]
    for src, (dst, _) in enumerate(ornt):
        order[int(dst)] = src
    out = arr
    for src, (_, flip) in enumerate(ornt):
        if flip == -1:
            out = np.flip(out, axis=src)
    return np.ascontiguousarray(np.transpose(out, [*order, *range(3, arr.ndim)]))


def reorient(arr: np.ndarray, affine: np.ndarray, target: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """Reorient an image or label map ``[X, Y, Z]`` to ``target`` axis codes; returns (array, new affine).

    For OASIS (LIA) → RAS this is the paper's transpose (0, 2, 1), flip axis 0, flip axis 2.
    """
    ornt = orientation_transform(affine, target)
    out = _apply(arr, ornt)
    new_affine = affine @ inv_ornt_aff(ornt, arr.shape[:3])
    return out, new_affine


def reorient_disp(disp: np.ndarray, affine: np.ndarray, target: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """Reorient a voxel displacement ``[X, Y, Z, 3]`` defined on the grid of ``affine``.

    The voxels move as in :func:`reorient`; in addition component ``c`` goes to the new axis of input
    axis ``c``, negated where that axis is flipped, so the reoriented field moves the reoriented images
    exactly as the original moved the originals.
    """
    ornt = orientation_transform(affine, target)
    out = _apply(disp, ornt)
    comps = np.empty_like(out)
    for src, (dst, flip) in enumerate(ornt):
        comps[..., int(dst)] = out[..., src] * flip
    return comps, affine @ inv_ornt_aff(ornt, disp.shape[:3])
