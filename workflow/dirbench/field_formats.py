"""Displacement-field file formats: ours, ITK / ANTs, Greedy; writing and reading back.

One deformation, three encodings. ``A`` is the fixed image's 4×4 voxel-to-RAS affine (nibabel), ``M`` its
3×3 linear part, ``x`` a fixed voxel index, ``D = diag(−1, −1, 1)`` the RAS ↔ LPS flip:

============  ==============================  ===========================  =====================================
format        array on disk                   values                       the moving point of fixed voxel x
============  ==============================  ===========================  =====================================
``dirbench``  ``[X, Y, Z, 3]`` float32        ``u``: fixed voxel units     RAS ``A (x + u(x))``
``itk``       ``[X, Y, Z, 1, 3]`` float32,    ``d = D M u``: mm, LPS       LPS ``D A x + d(x)``
              intent ``VECTOR`` (1007)
``greedy``    the same file as ``itk``        the same                     the same
============  ==============================  ===========================  =====================================

In all three the field lives on the fixed grid and pulls the moving image back (``warped(x)`` is the
moving image at that point), and every file carries the fixed image's affine.

*ITK / ANTs.* ITK's world frame is LPS (it negates the first two rows of the NIfTI affine when reading).
A displacement field transform maps the LPS point ``p`` to ``p + d(p)``; ``antsRegistration`` writes its
warps, and ``antsApplyTransforms`` and SimpleITK read them, as 5-D ``[X, Y, Z, 1, 3]`` NIfTI vector images
with intent ``NIFTI_INTENT_VECTOR`` (1007), the vectors stored as they are in memory: LPS. The intent
matters. ITK 5.4 and later read a ``NIFTI_INTENT_DISPVECT`` (1006) file as *RAS* vectors (the NIfTI
standard) and negate their x and y on reading (``ConvertRASDisplacementVectors``, on by default), while
older ITK does not read a 5-D DISPVECT file as a vector image at all. So LPS vectors under intent 1006
are wrong in current ITK (``tests/test_field_formats.py`` shows it with SimpleITK 2.5 / ITK 5.4), and we
write 1007 with LPS vectors, which every ITK version and ANTs read alike. On reading we accept both:
1007 as LPS, 1006 as RAS. ITK has no shear: a fixed affine with shear cannot be written for ITK.

*Greedy* (Yushkevich et al., 2016) is built on ITK: its ``-o warp.nii.gz`` is exactly the ``itk`` file
above (checked: Greedy 1.4 writes ``[X, Y, Z, 1, 3]`` float32, intent 1007, LPS mm), and
``greedy -rf fixed -rm moving out -r warp.nii.gz`` reslices through it.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from dirbench.errors import UserError
from dirbench.io import atomic_path, load_disp, save_disp

__all__ = ["FORMATS", "Field", "load_field", "physical_to_voxel", "save_field", "voxel_to_physical"]

#: Output formats of :func:`save_field` (``itk`` and ``greedy`` name the same file layout).
FORMATS = ("dirbench", "itk", "greedy")
INTENT_DISPVECT = 1006
INTENT_VECTOR = 1007
_RAS_LPS = np.diag([-1.0, -1.0, 1.0])


def voxel_to_physical(u: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``[..., 3]`` fixed voxel displacement → RAS mm, ``d = M u``; float64."""
    return np.asarray(u, np.float64) @ np.asarray(affine, np.float64)[:3, :3].T


def physical_to_voxel(d: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RAS mm displacement → fixed voxel units, ``u = M⁻¹ d``; float32."""
    inv = np.linalg.inv(np.asarray(affine, np.float64)[:3, :3])
    return (np.asarray(d, np.float64) @ inv.T).astype(np.float32)


@dataclass
class Field:
    """A displacement read from any format, as ours: ``u`` float32 ``[X, Y, Z, 3]`` and the fixed affine."""

    disp: np.ndarray
    affine: np.ndarray
    format: str


def _check_suffix(path: Path) -> None:
    if not (path.name.endswith(".nii.gz") or path.name.endswith(".nii")):
        raise UserError(f"{path}: a displacement field is written as NIfTI; use a .nii.gz or .nii name")


def save_field(path: str | os.PathLike, disp: np.ndarray, affine: np.ndarray, fmt: str = "dirbench") -> None:
    """Write ``disp`` (ours: ``[X, Y, Z, 3]`` fixed voxel units, fixed ``affine``) as ``fmt``, atomically."""
    path = Path(path)
    _check_suffix(path)
    if fmt == "dirbench":
        save_disp(path, disp, affine)
        return
    if fmt not in FORMATS:
        raise UserError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    affine = np.asarray(affine, np.float64)
    gram = affine[:3, :3].T @ affine[:3, :3]
    if not np.allclose(gram, np.diag(np.diag(gram)), rtol=0, atol=1e-6 * float(np.abs(gram).max())):
        raise UserError(f"{path}: the fixed affine has shear, which ITK images cannot represent; "
                        "resample the fixed image to an orthogonal grid first")
    if not np.isfinite(disp).all():
        raise UserError(f"{path}: refusing to write a displacement with non-finite values")
    lps = (voxel_to_physical(disp, affine) @ _RAS_LPS).astype(np.float32)
    img = nib.Nifti1Image(lps[:, :, :, None, :], affine)
    img.header.set_intent(INTENT_VECTOR)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def load_field(path: str | os.PathLike) -> Field:
    """Read a displacement in any of :data:`FORMATS` (or a NIfTI DISPVECT field) as ours.

    ``[X, Y, Z, 3]`` (or ``[3, X, Y, Z]``) is ours; ``[X, Y, Z, 1, 3]`` with intent 1007 is ITK / ANTs /
    Greedy (LPS mm), with intent 1006 a NIfTI displacement field (RAS mm). Raises :class:`UserError`
    naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        shape = img.shape
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise UserError(f"{path}: not a readable NIfTI file: {err}") from None
    affine = np.asarray(img.affine, np.float64)
    if len(shape) != 5:
        return Field(load_disp(path), affine, "dirbench")
    if shape[3:] != (1, 3):
        raise UserError(f"{path}: a 5-D displacement field must be [X, Y, Z, 1, 3], got {tuple(shape)}")
    intent = int(img.header["intent_code"])
    if intent not in (INTENT_VECTOR, INTENT_DISPVECT):
        raise UserError(f"{path}: 5-D field with intent code {intent}, neither VECTOR (1007, LPS as ITK, ANTs and "
                        "Greedy write) nor DISPVECT (1006, RAS): cannot tell which frame its vectors are in")
    try:
        data = np.asarray(img.dataobj, dtype=np.float64)[:, :, :, 0, :]
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise UserError(f"{path}: not a readable NIfTI file (corrupt or truncated?): {err}") from None
    if not np.isfinite(data).all():
        raise UserError(f"{path}: {int((~np.isfinite(data)).sum())} non-finite value(s) (NaN or inf)")
    ras = data @ _RAS_LPS if intent == INTENT_VECTOR else data
    return Field(physical_to_voxel(ras, affine), affine, "itk" if intent == INTENT_VECTOR else "dispvect")
