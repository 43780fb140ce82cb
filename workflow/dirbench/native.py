"""Registering native images with a trained model: to the model's grid and back, in physical terms.

A trained network sees only arrays on its training grid (:class:`dirbench.run_record.Preprocessing`:
``shape`` voxels of ``spacing`` mm, axes ``orientation``, intensities times ``intensity_scale``). A user's
pair may have any shape, orientation and voxel size, and fixed and moving may lie on different grids.
This module maps the pair onto the model's grid and the network's displacement back onto the fixed
image's own grid. Notation (all affines 4×4, voxel index → RAS world point in mm, as nibabel gives them):

- ``A_f``, ``A_m``: the fixed and moving images' affines; ``M_f`` the 3×3 linear part of ``A_f``;
- ``B = [L | o]``: the model grid's affine. ``L`` is ``diag(spacing)`` with its columns permuted and
  signed to the training orientation (for RAS, ``L = diag(s)``); ``o`` is the world point of voxel 0.

**1. The model grid** (:func:`model_grid`). Both images are resampled onto *one* grid ``B``, so their
world alignment is kept: the models correct local deformations of affinely pre-aligned brains (as the
OASIS and LUMIR data are) and the pair must be aligned before it comes here. ``B`` is centred on a world
point ``c`` of the fixed image, ``B·m = c`` with ``m = (shape − 1)/2``, so ``o = c − L·m``. ``c`` is

- ``centre="image"`` (the default): the centre of the fixed image's voxel grid, ``A_f·(N_f − 1)/2``;
  the model's box is padded or cropped symmetrically around the fixed image's field of view;
- ``centre="mass"``: the intensity-weighted centroid ``Σ w(x) A_f x / Σ w(x)`` of the fixed image, with
  ``w = max(f, 0)`` (the brain's centre of mass for a skull-stripped image).

When ``P = M_f⁻¹ L`` is a signed permutation (the fixed image has the model's spacing, in any axis
order), ``o`` is moved to the nearest fixed voxel centre, ``o ← A_f·round(A_f⁻¹ o)``. Then every model
voxel falls on a fixed voxel, and steps 2 and 3 copy values (reorientation plus pad/crop) instead of
interpolating. An image already on the training grid (every image of a prepared dataset) maps with
``B = A_f`` and passes through untouched.

**2. Reorient and resample** (:func:`to_model`). Model voxel ``y`` is the world point ``B y``, i.e. voxel
``T y`` of an image with affine ``A``, ``T = A⁻¹ B``. The image on the model grid is ``g(y) = f(T y)``,
trilinear, 0 outside the image (``scipy.ndimage.affine_transform``). This one map does the
reorientation (the permutation and flips in ``T``'s linear part), the change of voxel size and the
pad/crop. Where the model's voxels are coarser than the image's along a native axis ``j`` (ratio
``r_j > 1``), the image is first smoothed with a Gaussian of FWHM ``sqrt(r_j² − 1)`` native voxels, so
that the result has the model spacing's resolution instead of aliasing.

**3. Intensities**: ``g ← g · intensity_scale`` (what training did; LUMIR ``1/255``), or, with
``normalise``, ``g ← (g − min g)/(max g − min g)`` for images in other units (every dataset DIRBench
prepares lies in [0, 1] after its scale).

**4. Register**: the network gives ``v`` ``[X, Y, Z, 3]`` on the model grid in model voxels, with
``warped'(y) = moving'(y + v(y))``. Both images share ``B``, so in the world the fixed point ``p = B y``
maps to ``B (y + v(y)) = p + L v(y)``: the physical map is ``φ(p) = p + L·v(B⁻¹ p)`` (RAS, mm).

**5. Back to the fixed grid** (:func:`field_to_native`). At fixed voxel ``x`` (world ``p = A_f x``) the
model displacement is ``v`` interpolated at ``B⁻¹ A_f x`` (trilinear; clamped to the nearest model voxel
outside the model's box, so the field continues smoothly where the model saw nothing), and
``φ(A_f x) = A_f (x + u(x))`` gives the displacement in fixed voxel units::

    u(x) = M_f⁻¹ · L · v(B⁻¹ A_f x)

This ``u`` is the harness displacement (``ARCHITECTURE.md``): ``[X, Y, Z, 3]`` on the fixed grid, in
fixed voxel units, stored with ``A_f``; its physical displacement is ``M_f u`` mm (RAS). The moving
world point of fixed voxel ``x`` is ``A_f (x + u(x))``, which is moving voxel ``A_m⁻¹ A_f (x + u(x))``
(:func:`dirbench.warp.warp_image`); for a moving image on the fixed grid that is ``moving(x + u(x))``.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import aff2axcodes, axcodes2ornt
from scipy.ndimage import affine_transform, gaussian_filter

from dirbench.errors import UserError
from dirbench.io import load_image, load_labels
from dirbench.run_record import Preprocessing

__all__ = [
    "CENTRES",
    "FOV_REFUSE",
    "FOV_WARN",
    "Grid",
    "NativeImage",
    "NativePipeline",
    "PreparedPair",
    "field_to_native",
    "image_modality",
    "model_grid",
    "stderr_note",
    "to_model",
]

#: Where the model's box is centred on the fixed image (see the module docstring, step 1).
CENTRES = ("image", "mass")
#: An image with less than this fraction of its intensity inside the model's box is refused ...
FOV_REFUSE = 0.5
#: ... and one with less than this fraction gets a warning with the figures.
FOV_WARN = 0.9
#: Voxel sizes further than this factor from the training spacing get a warning.
SPACING_RATIO_WARN = 2.0
#: Scaled intensities above this 99.9th percentile get a warning (the model saw [0, 1]).
INTENSITY_WARN = 2.0
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_MODALITIES = ("T1w", "T2w", "T2starw", "PDw", "FLAIR", "CT")
_BIDS_SUFFIX = re.compile(r"_([A-Za-z0-9]+)\.nii(\.gz)?$")


def stderr_note(message: str) -> None:
    """Print a note as one ``dirbench: ...`` line on stderr (through tqdm, so progress bars stay intact)."""
    from tqdm import tqdm

    tqdm.write(f"dirbench: {message}", file=sys.stderr)


def _fmt(values: np.ndarray | tuple[float, ...], sep: str = "×") -> str:
    return sep.join(f"{float(v):.3g}" for v in values)


def _point(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.1f}" for v in values) + ")"


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` voxels and a 4×4 voxel-to-world (RAS, mm) ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis (the column norms of the linear part)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def axcodes(self) -> str:
        return "".join(aff2axcodes(self.affine))

    def centre(self) -> np.ndarray:
        """World point of the grid's centre, ``A·(N − 1)/2``."""
        return self.affine[:3, :3] @ ((np.array(self.shape) - 1) / 2) + self.affine[:3, 3]

    def to(self, other: Grid) -> np.ndarray:
        """4×4 map from this grid's voxel indices to ``other``'s (``other.affine⁻¹ · self.affine``)."""
        return np.linalg.inv(other.affine) @ self.affine

    def same_as(self, other: Grid) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, rtol=0, atol=1e-6)

    def describe(self) -> str:
        """E.g. ``RAS 160×224×192 voxels of 1×1×1 mm``."""
        return f"{self.axcodes} {_fmt(self.shape)} voxels of {_fmt(self.spacing)} mm"


@dataclass
class NativeImage:
    """A 3-D image as stored: ``[X, Y, Z]`` (float32, or int32 labels) and its grid, checked on loading."""

    path: Path
    array: np.ndarray
    grid: Grid

    @classmethod
    def load(cls, path: str | Path, labels: bool = False) -> NativeImage:
        """Read and check ``path``: a 3-D real-valued, finite image with an invertible affine.

        The data are fully decoded (a truncated gzip fails here, not later); ``labels`` reads an integer
        label map (int32) instead of a float32 image. Raises :class:`UserError` naming the file and the
        problem.
        """
        path = Path(path)
        array = load_labels(path) if labels else load_image(path)  # 3-D (or [X, Y, Z, 1]), finite, readable
        affine = np.asarray(nib.load(str(path)).affine, dtype=np.float64)
        lin = affine[:3, :3]
        if not np.isfinite(affine).all():
            raise UserError(f"{path}: the voxel-to-world affine has non-finite entries")
        det = float(np.linalg.det(lin))
        scale = float(np.prod(np.linalg.norm(lin, axis=0))) or 1.0
        if abs(det) <= 1e-6 * scale:
            raise UserError(f"{path}: the voxel-to-world affine is not invertible (determinant {det:.3g}); "
                            f"fix the header's sform/qform (linear part {np.round(lin, 4).tolist()})")
        if min(array.shape) < 2:
            raise UserError(f"{path}: a 3-D image needs at least 2 voxels along each axis, got {array.shape}")
        return cls(path, array, Grid(tuple(int(n) for n in array.shape), affine))  # type: ignore[arg-type]

    def mass(self) -> tuple[float, np.ndarray | None]:
        """Total positive intensity × voxel volume, and its centroid in world mm (None when empty)."""
        w = np.maximum(self.array, 0, dtype=np.float64)
        total = float(w.sum())
        if total <= 0:
            return 0.0, None
        centroid = [float((w.sum(axis=tuple(k for k in range(3) if k != j)) * np.arange(n)).sum()) / total
                    for j, n in enumerate(self.array.shape)]
        volume = abs(float(np.linalg.det(self.grid.affine[:3, :3])))
        return total * volume, self.grid.affine[:3, :3] @ np.array(centroid) + self.grid.affine[:3, 3]


def model_axes(prep: Preprocessing) -> np.ndarray:
    """``L``: the 3×3 linear part of the model grid's affine (column i: model axis i in RAS mm)."""
    ornt = axcodes2ornt(tuple(prep.orientation))
    lin = np.zeros((3, 3))
    for i, (world_axis, sign) in enumerate(ornt):
        lin[int(world_axis), i] = sign * float(prep.spacing[i])
    return lin


def _signed_permutation(matrix: np.ndarray, tol: float = 1e-4) -> bool:
    """Whether a 3×3 matrix (or the linear part of a 4×4 map whose offset is then integer) only permutes
    and flips axes: a voxel-to-voxel map that copies values."""
    rounded = np.round(matrix)
    if not np.allclose(matrix, rounded, rtol=0, atol=tol):
        return False
    lin = np.abs(rounded[:3, :3])
    return bool((lin.sum(axis=0) == 1).all() and (lin.sum(axis=1) == 1).all())


def model_grid(fixed: NativeImage, prep: Preprocessing, centre: str = "image") -> Grid:
    """The model's grid ``B = [L | o]`` centred on the fixed image (module docstring, step 1)."""
    if centre not in CENTRES:
        raise UserError(f"centre {centre!r}: use one of {', '.join(CENTRES)}")
    lin = model_axes(prep)
    point = fixed.grid.centre()
    if centre == "mass":
        _, centroid = fixed.mass()
        point = point if centroid is None else centroid
    origin = point - lin @ ((np.array(prep.shape) - 1) / 2)
    a_f = fixed.grid.affine
    if _signed_permutation(np.linalg.inv(a_f[:3, :3]) @ lin):
        origin = a_f[:3, :3] @ np.round(np.linalg.solve(a_f[:3, :3], origin - a_f[:3, 3])) + a_f[:3, 3]
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = lin, origin
    return Grid(tuple(int(n) for n in prep.shape), affine)  # type: ignore[arg-type]


def _sample(array: np.ndarray, t: np.ndarray, shape: tuple[int, ...], outside: str) -> np.ndarray:
    """``out[y] = array[T y]`` on an output grid of ``shape``, for the 4×4 voxel map ``T``; float32.

    Trailing axes of ``array`` beyond the first three are carried along. Where ``T`` is a signed
    permutation with an integer offset the values are copied by indexing (exact and fast); otherwise they
    are interpolated trilinearly. ``outside``: ``"zero"`` (0 outside the array) or ``"nearest"`` (the
    nearest voxel's value).
    """
    if _signed_permutation(t):
        lin, offset = np.round(t[:3, :3]).astype(int), np.round(t[:3, 3]).astype(int)
        source = [int(np.flatnonzero(lin[:, i])[0]) for i in range(3)]  # array axis read along output axis i
        index, valid = [], []
        for i, j in enumerate(source):
            x = lin[j, i] * np.arange(shape[i]) + offset[j]
            valid.append((x >= 0) & (x < array.shape[j]))
            index.append(np.clip(x, 0, array.shape[j] - 1))
        out = np.transpose(array, [*source, *range(3, array.ndim)])[np.ix_(*index)].astype(np.float32)
        if outside == "zero":
            inside = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
            out[~inside] = 0.0
        return out
    mode = "constant" if outside == "zero" else "nearest"
    if array.ndim == 3:
        return affine_transform(array, t[:3, :3], t[:3, 3], output_shape=shape, output=np.float32, order=1,
                                mode=mode, cval=0.0)
    return np.stack([_sample(array[..., c], t, shape, outside) for c in range(array.shape[-1])], axis=-1)


def to_model(image: NativeImage, grid: Grid) -> np.ndarray:
    """The image resampled onto ``grid`` (step 2): float32 ``grid.shape``, trilinear, 0 outside."""
    if image.grid.same_as(grid):
        return image.array
    t = grid.to(image.grid)  # model voxel -> image voxel
    array = image.array
    # Model voxel size along each native axis j, in native voxels (largest stretch of T's row j).
    ratio = np.abs(t[:3, :3]).max(axis=1)
    sigma = np.sqrt(np.clip(ratio**2 - 1.0, 0.0, None)) * _FWHM_TO_SIGMA
    if (sigma > 1e-3).any():
        array = gaussian_filter(array, sigma, mode="constant", cval=0.0)
    return _sample(array, t, grid.shape, outside="zero")


def field_to_native(v: np.ndarray, grid: Grid, fixed: Grid) -> np.ndarray:
    """The model's displacement ``v`` ``[*grid.shape, 3]`` (model voxels) as ``u`` on the fixed grid (step 5).

    ``u(x) = M_f⁻¹ · L · v(B⁻¹ A_f x)``: float32 ``[*fixed.shape, 3]`` in fixed voxel units.
    """
    if grid.same_as(fixed):
        return v
    sampled = _sample(v, fixed.to(grid), fixed.shape, outside="nearest")  # fixed voxel -> model voxel
    jac = np.linalg.solve(fixed.affine[:3, :3], grid.affine[:3, :3]).astype(np.float32)
    return sampled @ jac.T


def image_modality(path: str | Path) -> str | None:
    """The modality in a BIDS file name (``sub-01_T1w.nii.gz`` → ``T1w``), or None."""
    match = _BIDS_SUFFIX.search(Path(path).name)
    if match is None:
        return None
    suffix = match.group(1).lower()
    return next((m for m in _MODALITIES if m.lower() == suffix), None)


def _known_modality(text: str) -> str | None:
    """The first known modality token in a free-text description (``"T1w Brain MRI"`` → ``T1w``)."""
    tokens = re.split(r"[^A-Za-z0-9]+", text.lower())
    return next((m for m in _MODALITIES if m.lower() in tokens), None)


@dataclass
class PreparedPair:
    """A pair on the model grid: model-ready float32 arrays ``grid.shape``, and the images' own grids."""

    fixed: np.ndarray
    moving: np.ndarray
    grid: Grid
    fixed_grid: Grid
    moving_grid: Grid


@dataclass
class NativePipeline:
    """Steps 1–3 and 5 of the module docstring for one trained model, with the input checks.

    Attributes:
        prep: the checkpoint's preprocessing (its run record).
        source: the checkpoint's path, for messages.
        centre: ``image`` or ``mass`` (step 1).
        normalise: min–max intensities to [0, 1] instead of the training scale (step 3).
        modality: the images' modality (``T1w``, ...); None takes it from a BIDS file-name suffix;
            ``any`` skips the check. A modality other than the training data's is refused.
        note: where notes and warnings go (one line each).
    """

    prep: Preprocessing
    source: str
    centre: str = "image"
    normalise: bool = False
    modality: str | None = None
    note: Callable[[str], None] = stderr_note

    def prepare(self, fixed_path: str | Path, moving_path: str | Path) -> PreparedPair:
        """Load, check, resample and scale a pair onto the model grid."""
        fixed, moving = NativeImage.load(fixed_path), NativeImage.load(moving_path)
        for image in (fixed, moving):
            self._check_modality(image.path)
            self._check_spacing(image)
        grid = model_grid(fixed, self.prep, self.centre)
        arrays = []
        for image in (fixed, moving):
            array = to_model(image, grid)
            if not image.grid.same_as(grid):
                self._check_fov(image, array, grid)
                how = "copied (reoriented, padded/cropped)" if _signed_permutation(grid.to(image.grid)) else "resampled"
                self.note(f"{image.path}: {image.grid.describe()} {how} to the model grid {grid.describe()} "
                          f"(centred on the fixed image's {'centre of mass' if self.centre == 'mass' else 'centre'})")
            arrays.append(self._intensities(image.path, array))
        return PreparedPair(arrays[0], arrays[1], grid, fixed.grid, moving.grid)

    def _intensities(self, path: Path, array: np.ndarray) -> np.ndarray:
        if self.normalise:
            lo, hi = float(array.min()), float(array.max())
            if hi <= lo:
                raise UserError(f"{path}: constant image ({lo:g}) on the model grid; nothing to normalise")
            return (array - np.float32(lo)) / np.float32(hi - lo)
        scaled = array * np.float32(self.prep.intensity_scale) if self.prep.intensity_scale != 1 else array
        top = float(np.percentile(scaled[::2, ::2, ::2], 99.9))
        if top > INTENSITY_WARN:
            self.note(f"warning: {path}: intensities reach {top:.4g} (99.9th percentile) after the model's scale "
                      f"{self.prep.intensity_scale:g}, but {self.source} was trained on [0, 1]; "
                      "pass --normalise for images in other units")
        return scaled

    def _check_modality(self, path: Path) -> None:
        if self.modality == "any":
            return
        given = self.modality or image_modality(path)
        trained = _known_modality(self.prep.modality)
        if given is None or trained is None:
            return
        if given.lower() != trained.lower():
            how = "--modality" if self.modality else "its BIDS file name"
            raise UserError(f"{path}: a {given} image (from {how}), but {self.source} was trained on {trained} "
                            f"images ({self.prep.modality!r}); a model does not transfer across contrasts "
                            "(--modality any skips this check)")

    def _check_spacing(self, image: NativeImage) -> None:
        trained = np.array(self.prep.spacing, dtype=np.float64)
        have = np.sort(image.grid.spacing)
        ratio = np.maximum(have / np.sort(trained), np.sort(trained) / have)
        if (ratio > SPACING_RATIO_WARN).any():
            self.note(f"warning: {image.path}: voxels of {_fmt(image.grid.spacing)} mm, but {self.source} was "
                      f"trained on {_fmt(self.prep.spacing)} mm; the image is resampled to the training spacing "
                      "and the model sees another resolution than it learnt, so expect a poorer registration")

    def _check_fov(self, image: NativeImage, resampled: np.ndarray, grid: Grid) -> None:
        total, centroid = image.mass()
        if total <= 0:
            raise UserError(f"{image.path}: the image is empty (no positive intensity)")
        inside = float(np.maximum(resampled, 0, dtype=np.float64).sum()) * abs(np.linalg.det(grid.affine[:3, :3]))
        fraction = min(inside / total, 1.0)
        if fraction >= FOV_WARN:
            return
        assert centroid is not None
        figures = (f"only {100 * fraction:.1f}% of its intensity lies inside the model's field of view "
                   f"({_fmt(np.array(grid.shape) * grid.spacing)} mm box centred at {_point(grid.centre())} mm); "
                   f"its centre of mass is at {_point(centroid)} mm, "
                   f"{np.linalg.norm(centroid - grid.centre()):.0f} mm from the box centre")
        if fraction < FOV_REFUSE:
            raise UserError(f"{image.path}: {figures}; align the pair (affinely) and crop it to the brain first")
        self.note(f"warning: {image.path}: {figures}; the part outside is not registered")

    def finish(self, v: np.ndarray, pair: PreparedPair) -> np.ndarray:
        """The model's displacement ``[*grid.shape, 3]`` as ``u`` on the fixed image's grid (step 5)."""
        return field_to_native(v, pair.grid, pair.fixed_grid)

    def finish_inverse(self, w: np.ndarray, pair: PreparedPair) -> np.ndarray:
        """The model's inverse field (fixed → moving pull-back, on the model grid) on the moving image's grid.

        Step 5 with the roles swapped: ``w'(x) = M_m⁻¹ · L · w(B⁻¹ A_m x)``, moving voxel units, naming the
        fixed world point ``A_m (x + w'(x))`` of moving voxel ``x``.
        """
        return field_to_native(w, pair.grid, pair.moving_grid)
