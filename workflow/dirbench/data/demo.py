"""The embedded offline demo dataset: synthetic subjects deformed from the bundled MNI152 template.

Nothing is downloaded: nilearn's wheel ships the ICBM 2009a nonlinear symmetric MNI152 T1 template
(skull-stripped, 1 mm, RAS, 197×233×189) with its grey / white matter probability maps (Fonov et al.,
NeuroImage 54(1), 2011). From them :func:`generate` writes a Learn2Reg-style folder (``dataset.json`` in
the schema of :mod:`dirbench.dataset`):

1. **Template** (:func:`build_template`): the T1 and tissue maps are anti-aliased (Gaussian, FWHM² =
   spacing² - 1 mm²) and resampled to an isotropic ``spacing`` mm grid covering the brain's bounding box
   plus :data:`MARGIN_MM`, every side rounded *up* to a multiple of 16 voxels (4 mm → 48×64×48, 6 mm →
   32×48×32). A 35-label parcellation (:data:`LABELS`, :func:`parcellate`) is cut from the tissue maps:
   tissue (cortex, white matter, deep grey matter, ventricles) × hemisphere (left: MNI x < 0) × region
   (slabs between fixed MNI planes), plus the cerebellum per hemisphere and the brainstem. Landmark ``k`` is
   a ball of radius :data:`LANDMARK_RADIUS` voxels at the voxel of label ``LANDMARK_LABELS[k - 1]`` nearest
   to its centroid (integer label volumes, as LUMIR's landmark files).
2. **Subjects** (:func:`make_subject`): subject ``i`` draws from ``numpy.random.default_rng([seed, i])``
   and so does not depend on how many subjects are made. A stationary velocity field ``v`` (white noise on
   a lattice fixed in MNI space, Gaussian-smoothed with σ = ``deform_corr_mm``, scaled to an RMS magnitude
   of ``deform_mm`` × U(1 ± ``deform_jitter``)) is integrated by scaling and squaring (Arsigny et al.,
   MICCAI 2006; as in VoxelMorph-diff, Dalca et al., MICCAI 2018) into ``exp(v)`` and its inverse
   ``exp(-v)``. The image is the template pulled back through the warp (trilinear) times a smooth
   log-normal bias field (``bias_std``, correlation ``bias_corr_mm``), with Rician noise (σ = ``noise``),
   the background zeroed (skull-stripped, as OASIS) and intensities divided by the brain's 99.5th
   percentile and clipped to [0, 1] (like the OASIS ``norm`` images). Labels are pulled back by
   partial-volume majority (:func:`warp_labels_majority`), landmarks by nearest neighbour. At the defaults
   a subject's RMS displacement in the brain is 3.4-5.8 mm, and the test pairs' zero-displacement Dice is
   ≈ 0.60 (OASIS: 0.58).

Ground-truth warps, ``[X, Y, Z, 3]`` float32 voxel units in the project's pull-back convention, all on the
one shared grid (stored exactly as used: rounded to multiples of 2⁻¹⁰ voxel):

- ``warps/warp{id}.nii.gz`` = ``w = exp(v) - id``: ``subject(x) ≈ template(x + w(x))``; the displacement
  that registers the template (moving) to the subject (fixed);
- ``warps/invwarp{id}.nii.gz`` = ``w⁻ = exp(-v) - id``: ``template(y) ≈ subject(y + w⁻(y))``; subject
  moving, template fixed.

The true displacement of a pair (fixed ``f``, moving ``m``) is ``u(x) = φ_m⁻¹(φ_f(x)) - x =
w_f(x) + w⁻_m(x + w_f(x))`` (:func:`true_pair_disp`), so that ``moving(x + u(x)) ≈ fixed(x)``. Warping the
moving labels with it by nearest neighbour (as the evaluators do) reaches a mean Dice of ≈ 0.84 at 4 mm,
not 1: the moving labels were already resampled once, and at 4 mm the labels are only a few voxels thick.
Through the template (``template_labels(φ_m(x + u(x)))``) the overlap is > 0.99.
``dataset.json`` declares these fields with ``"ground_truth": "template_warps"`` (:mod:`dirbench.dataset`), so the
evaluation reports the end-point error ``epe`` against :func:`true_pair_disp` for every method, Initial included.

Splits (:func:`split_sizes`): the first ``n_train`` subjects train; the next ``n_val`` and the last
``n_test`` are held out and listed in ``images``; the ``validation`` and ``test`` pair lists hold every
unordered pair of their subjects, the higher id fixed (18 subjects: 10 / 4 / 4, so 6 validation and 6 test
pairs; 24 subjects: 14 / 5 / 5, so 10 and 10). ``manifest.json`` is written last; a folder whose manifest
matches the requested parameters and files is left as it is, one made with other settings is refused unless
``force``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from dirbench.dataset import Dataset, image_id
from dirbench.errors import UserError
from dirbench.io import atomic_path, load_disp, save_disp, save_image, save_labels
from dirbench.warp import warp_array
from methods.config import Config, setting

__all__ = [
    "LABELS",
    "LANDMARK_LABELS",
    "DemoParams",
    "Subject",
    "Template",
    "build_template",
    "generate",
    "make_subject",
    "parcellate",
    "split_sizes",
    "true_pair_disp",
    "warp_labels_majority",
]

#: Generator version: bump when the output for given parameters changes (it invalidates old manifests).
#: 2: ``dataset.json`` declares ``"ground_truth": "template_warps"`` (the images and fields are unchanged).
VERSION = 3
#: Files bundled in nilearn's wheel under ``nilearn/datasets/data`` (ICBM 2009a nonlinear symmetric, 1 mm).
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
#: Free space (mm) around the template brain's bounding box before rounding the grid up to multiples of 16.
MARGIN_MM = 8.0
#: Spacing (mm) of the MNI-space lattice on which the random velocity and bias fields are drawn; its padding.
LATTICE_MM = 8.0
LATTICE_PAD_MM = 32.0
#: The bundled template's box: first voxel centre (MNI mm) and size (1 mm voxels).
_MNI_ORIGIN, _MNI_SIZE = (-98.0, -134.0, -72.0), (197, 233, 189)
#: Coarsest spacing (mm) at which all 35 labels survive.
MAX_SPACING_MM = 8.0
MIN_SUBJECTS = 6
#: Landmark blob radius (voxels): a ball of 19 voxels.
LANDMARK_RADIUS = 1.5

# Region cut planes, MNI mm (RAS): anterior-posterior slabs of the cerebrum and a superior / inferior split.
_Y_PREFRONTAL, _Y_CENTRAL, _Y_OCCIPITAL, _Z_SUPERIOR = 10.0, -18.0, -68.0, 10.0
_REGIONS = ("Prefrontal", "Precentral", "Parietal", "Occipital", "Orbitofrontal", "Temporal")
_HEMI_NAMES = (
    *(f"Cortex-{r}" for r in _REGIONS),
    *(f"WM-{r}" for r in _REGIONS),
    "Ventricle",
    "Striatum",
    "Thalamus",
    "Cerebellum-Cortex",
    "Cerebellum-WM",
)
#: The 35 labels: 1..17 left hemisphere, 18..34 right, 35 brainstem.
LABELS: dict[int, str] = {
    **{1 + k: f"Left-{n}" for k, n in enumerate(_HEMI_NAMES)},
    **{18 + k: f"Right-{n}" for k, n in enumerate(_HEMI_NAMES)},
    35: "Brainstem",
}
#: Landmark k (1-based) sits in label LANDMARK_LABELS[k - 1] (at its voxel nearest to its centroid): the six
#: white-matter regions, the striatum and the thalamus of each hemisphere.
LANDMARK_LABELS: tuple[int, ...] = (*range(7, 13), 14, 15, *range(24, 30), 31, 32)


@dataclass(frozen=True)
class DemoParams(Config):
    """Generator parameters (all recorded in ``dataset.json`` and the manifest; the ``dirbench data demo``
    flags are generated from them). Lengths in mm."""

    subjects: int = setting(24, "number of subjects (at least 6); the split is in split_sizes()")
    spacing: float = setting(4.0, f"isotropic voxel size in mm, at most {MAX_SPACING_MM:g} (4: 48x64x48, 6: 32x48x32)")
    seed: int = setting(0, "random seed (a seed always gives the same arrays)")
    deform_mm: float = setting(6.0, "RMS magnitude of each subject's velocity field (mm)")
    deform_corr_mm: float = setting(16.0, "correlation length (Gaussian sigma) of the velocity field (mm)")
    deform_jitter: float = setting(0.25, "per-subject relative spread of deform_mm, in [0, 1)")
    bias_std: float = setting(0.1, "standard deviation of the log bias field")
    bias_corr_mm: float = setting(48.0, "correlation length of the bias field (mm)")
    noise: float = setting(0.02, "Rician noise sigma in template intensity units (white matter ~ 0.8)")

    def check(self) -> None:
        """Raise :class:`UserError` for parameters the generator cannot honour."""
        if not MIN_SUBJECTS <= self.subjects <= 9999:
            raise UserError(
                f"--subjects {self.subjects}: need {MIN_SUBJECTS} (2 training, 2 validation, 2 test) to 9999"
            )
        if not (math.isfinite(self.spacing) and 0 < self.spacing <= MAX_SPACING_MM):
            raise UserError(
                f"--spacing {self.spacing:g}: must be in (0, {MAX_SPACING_MM:g}] mm (coarser loses labels)"
            )
        if self.seed < 0:
            raise UserError(f"--seed {self.seed}: must be >= 0")
        for name in ("deform_mm", "deform_corr_mm", "bias_corr_mm", "bias_std", "noise"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name}={getattr(self, name)}: must be >= 0")
        if not 0 <= self.deform_jitter < 1:
            raise UserError(f"deform_jitter={self.deform_jitter}: must be in [0, 1)")


def split_sizes(subjects: int) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)``: 1/5 validation (at least 2; 4 of 18 subjects give 6 validation pairs,
    enough for model selection and the convergence verdict), 5/24 test (at least 2), the rest training."""
    n_val = max(2, round(subjects / 5))
    n_test = max(2, round(subjects * 5 / 24))
    return subjects - n_val - n_test, n_val, n_test


# --------------------------------------------------------------------------- template


@dataclass(frozen=True)
class Template:
    """The template on the demo grid (read-only arrays, shape ``[X, Y, Z]``).

    ``image`` float32 in [0, 1]; ``brain`` float32 brain mask (0 / 1); ``labels`` int32
    (:data:`LABELS`); ``landmarks`` int32 blobs ``1..K``; ``affine`` voxel → MNI mm.
    """

    image: np.ndarray
    brain: np.ndarray
    labels: np.ndarray
    landmarks: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> float:
        return float(self.affine[0, 0])


def _load_mni152() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The bundled 1 mm template maps (float32, scaled to [0, 1]) and their affine."""
    import nibabel as nib

    folder = importlib.resources.files("nilearn") / "datasets" / "data"
    maps, affine = {}, None
    for key, name in TEMPLATE_FILES.items():
        with importlib.resources.as_file(folder / name) as path:
            if not path.is_file():
                raise UserError(f"{path}: MNI152 template missing from the nilearn installation")
            img = nib.load(str(path))
            maps[key] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
            affine = np.asarray(img.affine, dtype=np.float64)
    assert affine is not None
    return maps, affine


def _world(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World (mm) coordinates ``[3, X, Y, Z]`` of every voxel centre of a grid."""
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:]).reshape(3, *shape)


def _grid(brain: np.ndarray, affine: np.ndarray, spacing: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """The demo grid: brain bounding box + margin, sides rounded up to multiples of 16; (shape, affine)."""
    idx = np.argwhere(brain)
    lo = affine[:3, :3] @ idx.min(0) + affine[:3, 3]
    hi = affine[:3, :3] @ idx.max(0) + affine[:3, 3]
    shape = tuple(16 * math.ceil(((size + 2 * MARGIN_MM) / spacing + 1) / 16) for size in hi - lo)
    centre = (lo + hi) / 2
    out = np.diag([spacing, spacing, spacing, 1.0])
    out[:3, 3] = centre - spacing * (np.array(shape) - 1) / 2
    return shape, out  # type: ignore[return-value]


def _resample(volume: np.ndarray, src_affine: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Sample ``volume`` (on ``src_affine``) trilinearly at world points ``[3, ...]``; 0 outside; float32."""
    inv = np.linalg.inv(src_affine)
    coords = np.tensordot(inv[:3, :3], world, axes=1) + inv[:3, 3].reshape(3, *([1] * (world.ndim - 1)))
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0).astype(np.float32)


def _ball(radius: float) -> np.ndarray:
    """Boolean ball of ``radius`` voxels in a cube of side ``2 floor(radius) + 1``."""
    r = math.floor(radius)
    grid = np.indices((2 * r + 1,) * 3) - r
    return (grid**2).sum(0) <= radius**2


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (empty stays empty)."""
    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n == 0:
        return mask
    return components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))


def parcellate(
    gm: np.ndarray, wm: np.ndarray, world: np.ndarray, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """The 35-label parcellation (:data:`LABELS`) and the brain mask, from tissue maps on an isotropic grid.

    Args:
        gm, wm: grey / white matter probability ``[X, Y, Z]`` in [0, 1] (partial volumes at ``spacing``).
        world: MNI coordinates (mm) ``[3, X, Y, Z]`` of the voxels (RAS: x left → right, y posterior →
            anterior, z inferior → superior).
        spacing: voxel size in mm.

    Returns:
        ``(labels, brain)``: int32 ``[X, Y, Z]`` label map (0 = background, sulcal CSF, 4th ventricle) and
        the boolean brain mask (tissue, closed over sulci with a 6 mm ball, holes filled).

    Rules (MNI mm): tissue = gm + wm ≥ 0.5; cortex where gm ≥ wm, white matter otherwise. Ventricles: the
    largest connected piece per hemisphere of the non-tissue brain-mask voxels ≥ 10 mm deep. Brainstem:
    |x| < 12, -42 ≤ y < -12, z < -8. Cerebellum (infratentorial): y < -34 and z < 0.3 (y + 50) - 0.47 |x| (a
    tent sloping down posteriorly and laterally). Deep grey matter: cortex-class voxels with 5 ≤ |x| < 32,
    -38 ≤ y < 28, -12 ≤ z < 22; thalamus where y < -8 and |x| < 22, striatum otherwise. The remaining cerebral
    cortex and white matter split into six slabs: prefrontal (y ≥ 10, z ≥ 10), precentral (-18 ≤ y < 10,
    z ≥ 10), parietal (-68 ≤ y < -18, z ≥ 10), occipital (y < -68), orbitofrontal (y ≥ 10, z < 10) and
    temporal (-68 ≤ y < 10, z < 10).
    """
    x, y, z = world
    tissue = gm + wm >= 0.5
    radius = max(1.0, 6.0 / spacing)
    pad = math.ceil(radius) + 1
    closed = ndimage.binary_closing(np.pad(tissue, pad), structure=_ball(radius))
    closed = closed[pad:-pad, pad:-pad, pad:-pad]
    brain = ndimage.binary_fill_holes(closed | tissue)
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    cortex_class = tissue & (gm >= wm)
    wm_class = tissue & ~cortex_class
    ventricle = brain & ~tissue & (depth >= 10.0)
    ventricle = _largest_component(ventricle & (x < 0)) | _largest_component(ventricle & (x >= 0))

    brainstem = tissue & (np.abs(x) < 12) & (y >= -42) & (y < -12) & (z < -8)
    infra = tissue & ~brainstem & (y < -34) & (z < 0.3 * (y + 50) - 0.47 * np.abs(x))
    cerebrum = tissue & ~brainstem & ~infra
    deep = cerebrum & cortex_class & (np.abs(x) >= 5) & (np.abs(x) < 32) & (y >= -38) & (y < 28)
    deep &= (z >= -12) & (z < 22)
    thalamus = deep & (y < -8) & (np.abs(x) < 22)
    superior = z >= _Z_SUPERIOR
    region = [
        superior & (y >= _Y_PREFRONTAL),
        superior & (y >= _Y_CENTRAL) & (y < _Y_PREFRONTAL),
        superior & (y >= _Y_OCCIPITAL) & (y < _Y_CENTRAL),
        y < _Y_OCCIPITAL,
        ~superior & (y >= _Y_PREFRONTAL),
        ~superior & (y >= _Y_OCCIPITAL) & (y < _Y_PREFRONTAL),
    ]
    hemi = np.zeros(gm.shape, np.int32)  # label of the structure before the hemisphere offset (1..17)
    for k, reg in enumerate(region):
        hemi[cerebrum & cortex_class & reg] = 1 + k
        hemi[cerebrum & wm_class & reg] = 7 + k
    hemi[ventricle] = 13
    hemi[deep & ~thalamus] = 14
    hemi[thalamus] = 15
    hemi[infra & cortex_class] = 16
    hemi[infra & wm_class] = 17
    labels = np.where(hemi > 0, hemi + np.where(x < 0, 0, 17), 0).astype(np.int32)
    labels[brainstem] = 35
    return labels, brain


def _landmarks(labels: np.ndarray) -> np.ndarray:
    """Landmark blobs ``[X, Y, Z]`` int32: ball ``k`` (radius :data:`LANDMARK_RADIUS`) centred on the voxel of
    label ``LANDMARK_LABELS[k - 1]`` nearest to that label's centroid."""
    out = np.zeros(labels.shape, np.int32)
    ball = _ball(LANDMARK_RADIUS)
    r = ball.shape[0] // 2
    for k, label in enumerate(LANDMARK_LABELS, start=1):
        idx = np.argwhere(labels == label)
        centre = idx[np.argmin(((idx - idx.mean(0)) ** 2).sum(1))]
        lo, hi = centre - r, centre + r + 1
        if (lo < 0).any() or (hi > np.array(labels.shape)).any():
            raise RuntimeError(f"landmark {k} ({LABELS[label]}) lies on the grid border")
        region = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        region[ball] = k
    return out


@functools.lru_cache(maxsize=4)
def build_template(spacing: float) -> Template:
    """The template resampled to ``spacing`` mm with its parcellation and landmarks (cached; read-only)."""
    maps, src_affine = _load_mni152()
    shape, affine = _grid(maps["gm"] + maps["wm"] >= 0.2, src_affine, spacing)
    world = _world(affine, shape)
    # Anti-aliasing: Gaussian with FWHM² = spacing² - 1 mm² (the source is already 1 mm).
    sigma = math.sqrt(max(spacing**2 - 1.0, 0.0)) / (2 * math.sqrt(2 * math.log(2)))
    res = {k: _resample(ndimage.gaussian_filter(v, sigma) if sigma else v, src_affine, world)
           for k, v in maps.items()}
    labels, brain = parcellate(res["gm"], res["wm"], world, spacing)
    missing = sorted(set(LABELS) - set(np.unique(labels).tolist()))
    if missing:
        raise UserError(f"--spacing {spacing:g}: labels {missing} vanish at this spacing; use a finer one")
    arrays = [np.clip(res["t1"], 0.0, 1.0), brain.astype(np.float32), labels, _landmarks(labels)]
    for a in arrays:
        a.setflags(write=False)
    return Template(*arrays, affine=affine)


# --------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class Subject:
    """One synthetic subject on the template grid.

    ``image`` float32 ``[X, Y, Z]`` in [0, 1]; ``labels`` and ``landmarks`` int32 ``[X, Y, Z]``; ``warp`` and
    ``inverse_warp`` float32 ``[X, Y, Z, 3]`` voxel units (directions in the module docstring).
    """

    image: np.ndarray
    labels: np.ndarray
    landmarks: np.ndarray
    warp: np.ndarray
    inverse_warp: np.ndarray


def _random_field(
    rng: np.random.Generator, template: Template, channels: int, corr_mm: float, rms: float
) -> np.ndarray:
    """Smooth Gaussian random field ``[channels, X, Y, Z]`` (mm units) on the template grid.

    White noise on a lattice of :data:`LATTICE_MM` spacing over the MNI152 box plus :data:`LATTICE_PAD_MM`
    (fixed in MNI space, so a seed gives nearly the same anatomy at every spacing), Gaussian-smoothed
    (σ = ``corr_mm``), scaled so that the RMS over the lattice of the vector magnitude is ``rms``, and
    sampled at the voxel centres with cubic B-splines.
    """
    lo = np.array(_MNI_ORIGIN) - LATTICE_PAD_MM
    shape = tuple(math.ceil((n + 2 * LATTICE_PAD_MM) / LATTICE_MM) + 1 for n in _MNI_SIZE)
    noise = rng.standard_normal((channels, *shape))
    smooth = np.stack([ndimage.gaussian_filter(c, corr_mm / LATTICE_MM, mode="nearest") for c in noise])
    smooth *= rms / max(float(np.sqrt((smooth**2).sum(0).mean())), 1e-12)
    coords = (_world(template.affine, template.shape) - lo.reshape(3, 1, 1, 1)) / LATTICE_MM
    fields = [ndimage.map_coordinates(c, coords, order=3, mode="nearest") for c in smooth]
    return np.stack(fields).astype(np.float32)


def _exp(velocity: np.ndarray) -> np.ndarray:
    """Scaling and squaring: the displacement ``[3, X, Y, Z]`` of ``exp(v)`` for a stationary velocity ``v``
    ``[3, X, Y, Z]`` (voxel units), with enough squarings (at least 4) that the first step is ≤ 0.5 voxel."""
    import torch

    from methods.spatial import compose

    peak = float(np.abs(velocity).max())
    steps = max(4, math.ceil(math.log2(max(peak, 1e-6) / 0.5)))
    disp = torch.from_numpy(velocity / 2.0**steps).unsqueeze(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small grids: one thread is fastest, and far faster on a busy machine
    try:
        with torch.no_grad():
            for _ in range(steps):
                disp = compose(disp, disp)
    finally:
        torch.set_num_threads(threads)
    return disp[0].numpy()


def _quantise(disp: np.ndarray) -> np.ndarray:
    """Round to multiples of 2⁻¹⁰ voxel (exact in float32): the stored warps compress about 1.7× better, and
    the subjects are rendered with exactly the stored fields."""
    return (np.round(disp * 1024.0) / 1024.0).astype(np.float32)


def warp_labels_majority(labels: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Pull a label map ``[X, Y, Z]`` back through ``disp`` ``[X, Y, Z, 3]`` (voxel units) by partial volume.

    At ``x + disp(x)`` each of the 8 surrounding voxels votes for its label with its trilinear weight; the
    label with the largest total wins (ties: the first corner in C order; corners outside the grid vote for
    0). This is the arg-max of the linearly interpolated one-hot maps, computed without them, and keeps label
    boundaries smoother than nearest neighbour. Zero displacement returns ``labels`` exactly. Returns int32
    ``[X, Y, Z]``.
    """
    shape = np.array(labels.shape).reshape(3, 1, 1, 1)
    pos = np.indices(labels.shape, dtype=np.float64) + np.moveaxis(disp, -1, 0)
    base = np.floor(pos)
    frac = pos - base
    base = base.astype(np.int64)
    votes, weights = [], []
    for corner in np.ndindex(2, 2, 2):
        idx = base + np.array(corner).reshape(3, 1, 1, 1)
        inside = ((idx >= 0) & (idx < shape)).all(0)
        clipped = np.clip(idx, 0, shape - 1)
        votes.append(np.where(inside, labels[clipped[0], clipped[1], clipped[2]], 0))
        w = np.ones(labels.shape)
        for axis, bit in enumerate(corner):
            w *= frac[axis] if bit else 1.0 - frac[axis]
        weights.append(w)
    score = [sum(w * (v == vote) for v, w in zip(votes, weights, strict=True)) for vote in votes]
    return np.take_along_axis(np.stack(votes), np.argmax(np.stack(score), 0)[None], 0)[0].astype(np.int32)


def make_subject(template: Template, params: DemoParams, index: int) -> Subject:
    """Subject ``index`` (1-based): a deformed, bias-corrupted, noisy copy of the template (module docstring).

    Deterministic in ``(params.seed, index)`` and independent of ``params.subjects``.
    """
    rng = np.random.default_rng([params.seed, index])
    rms = params.deform_mm * rng.uniform(1 - params.deform_jitter, 1 + params.deform_jitter)
    velocity = _random_field(rng, template, 3, params.deform_corr_mm, rms) / template.spacing
    warp, inverse = (_quantise(np.moveaxis(_exp(sign * velocity), 0, -1)) for sign in (1.0, -1.0))
    bias = np.exp(_random_field(rng, template, 1, params.bias_corr_mm, params.bias_std)[0])

    clean = warp_array(template.image, warp, order=1) * bias
    noise = params.noise * rng.standard_normal((2, *clean.shape))
    image = np.sqrt((clean + noise[0]) ** 2 + noise[1] ** 2)  # Rician magnitude
    brain = warp_array(template.brain, warp, order=1) >= 0.5
    image = np.where(brain, image, 0.0)
    image = np.clip(image / np.percentile(image[brain], 99.5), 0.0, 1.0).astype(np.float32)
    return Subject(
        image=image,
        labels=warp_labels_majority(template.labels, warp),
        landmarks=warp_array(template.landmarks, warp, order=0),
        warp=warp,
        inverse_warp=inverse,
    )


def true_pair_disp(dataset: str | Path | Dataset, fixed_id: str, moving_id: str) -> np.ndarray:
    """The ground-truth displacement ``[X, Y, Z, 3]`` (float32, voxel units) of a demo pair.

    ``u(x) = w_f(x) + w⁻_m(x + w_f(x))`` (:func:`methods.spatial.compose`, trilinear, border padding): the
    map ``φ_m⁻¹ ∘ φ_f``, so that ``moving(x + u(x)) ≈ fixed(x)`` in the project's pull-back convention.

    Args:
        dataset: a demo folder, its ``dataset.json``, or a loaded :class:`~dirbench.dataset.Dataset`.
        fixed_id, moving_id: image ids, e.g. ``"0021"``.
    """
    import torch

    from methods.spatial import compose

    if not isinstance(dataset, Dataset):
        path = Path(dataset)
        dataset = Dataset.load(path / "dataset.json" if path.is_dir() else path)
    records = [*dataset.raw.get("training", []), *dataset.raw.get("images", [])]
    entries = {image_id(e["image"]): e for e in records}
    for key in (fixed_id, moving_id):
        if "inverse_warp" not in entries.get(key, {}):
            raise UserError(f"{dataset.path}: no image {key!r} with ground-truth warps (not a demo dataset?)")
    fields = [
        load_disp(dataset.resolve(entries[moving_id]["inverse_warp"]), dataset.shape),
        load_disp(dataset.resolve(entries[fixed_id]["warp"]), dataset.shape),
    ]
    inverse_m, warp_f = (torch.from_numpy(np.ascontiguousarray(np.moveaxis(f, -1, 0)))[None] for f in fields)
    with torch.no_grad():
        disp = compose(inverse_m, warp_f)[0].numpy()
    return np.ascontiguousarray(np.moveaxis(disp, 0, -1), dtype=np.float32)


# --------------------------------------------------------------------------- the dataset folder


def _pairs(ids: Sequence[str], path: dict[str, str]) -> list[dict[str, str]]:
    """Every unordered pair of ``ids``, the higher id fixed (as the OASIS and LUMIR lists)."""
    return [{"fixed": path[f], "moving": path[m]} for i, m in enumerate(ids) for f in ids[i + 1 :]]


def _manifest_key(params: DemoParams) -> dict[str, Any]:
    return {**params.to_dict(), "version": VERSION}


def _is_complete(out: Path, params: DemoParams) -> bool:
    """Whether ``out/manifest.json`` records these parameters and all its files have their recorded sizes."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        return manifest["params"] == _manifest_key(params) and all(
            (out / rel).stat().st_size == size for rel, size in manifest["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _changed_settings(out: Path, params: DemoParams) -> list[str]:
    """``key: old → new`` for every generator setting in which ``out``'s manifest differs from ``params``."""
    try:
        old = json.loads((out / "manifest.json").read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no (readable) manifest: nothing complete there, an interrupted run at most
    new = _manifest_key(params)
    return [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]


def generate(
    out: str | Path, params: DemoParams | None = None, log: Callable[[str], None] | None = None,
    force: bool = False,
) -> Path:  # fmt: skip
    """Write the demo dataset into ``out`` (created if needed); returns the path of its ``dataset.json``.

    A folder already holding a complete dataset for the same parameters is left untouched. A folder holding
    a complete dataset made with other settings (or by another generator version) is refused, naming the
    differences, unless ``force``: results built on it would silently change. Otherwise the old manifest is
    removed first (an interrupted run is never taken as complete), every file is written atomically, files
    of an older manifest that the new dataset lacks are deleted, and the manifest comes last.
    ``log`` receives one progress line per subject.
    """
    params = params or DemoParams()
    params.check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if _is_complete(out, params):
        if log:
            log(f"{out}: demo dataset already complete, nothing to do")
        return out / "dataset.json"
    changed = _changed_settings(out, params)
    if changed and not force:
        raise UserError(
            f"{out}: holds a demo dataset made with other settings ({'; '.join(changed)}); use another --out, "
            "or --force to regenerate it (results computed on the old data become stale)"
        )
    old_files: set[str] = set()
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        try:
            old_files = set(json.loads(manifest_path.read_text()).get("files", {}))
        except (OSError, ValueError, AttributeError):
            old_files = set()
        manifest_path.unlink()

    template = build_template(params.spacing)
    affine = template.affine
    files: list[str] = []

    def write(rel: str, saver: Callable[[Path, np.ndarray, np.ndarray], None], array: np.ndarray) -> str:
        saver(out / rel, array, affine)
        files.append(rel)
        return f"./{rel}"

    template_entry = {
        "image": write("template/image.nii.gz", save_image, template.image),
        "label": write("template/labels.nii.gz", save_labels, template.labels),
        "landmarks": write("template/landmarks.nii.gz", save_labels, template.landmarks),
    }
    entries: dict[str, dict[str, str]] = {}
    for index in range(1, params.subjects + 1):
        key = f"{index:04d}"
        subject = make_subject(template, params, index)
        entries[key] = {
            "image": write(f"images/img{key}.nii.gz", save_image, subject.image),
            "label": write(f"labels/seg{key}.nii.gz", save_labels, subject.labels),
            "landmarks": write(f"landmarks/lmk{key}.nii.gz", save_labels, subject.landmarks),
            "warp": write(f"warps/warp{key}.nii.gz", save_disp, subject.warp),
            "inverse_warp": write(f"warps/invwarp{key}.nii.gz", save_disp, subject.inverse_warp),
        }
        if log:
            log(f"subject {key} / {params.subjects:04d}")
    n_train, n_val, _ = split_sizes(params.subjects)
    ids = list(entries)
    image_paths = {k: e["image"] for k, e in entries.items()}
    dataset = {
        "name": "demo",
        "description": "Synthetic T1w brains: the MNI152 (ICBM 2009a sym) template under random "
        "diffeomorphisms, with bias fields and Rician noise; generated offline by `dirbench data demo`.",
        "reference": "Fonov et al., NeuroImage 54(1):313-327, 2011 (template); dirbench.data.demo",
        "tensorImageShape": {"0": list(template.shape)},
        "spacing": [params.spacing] * 3,
        "modality": {"0": "T1w"},
        "labels": {str(k): v for k, v in LABELS.items()},
        "ground_truth": "template_warps",  # see dirbench.dataset: epe is evaluated against true_pair_disp
        "landmarkLabels": {str(k): f"{LABELS[lab]}-centre" for k, lab in enumerate(LANDMARK_LABELS, start=1)},
        "seed": params.seed,
        "generator": _manifest_key(params),
        "numTraining": n_train,
        "training": [entries[k] for k in ids[:n_train]],
        "images": [entries[k] for k in ids[n_train:]],
        "template": template_entry,
        "validation": _pairs(ids[n_train : n_train + n_val], image_paths),
        "test": _pairs(ids[n_train + n_val :], image_paths),
    }
    _write_json(out / "dataset.json", dataset)
    files.append("dataset.json")
    root = out.resolve()
    for rel in sorted(old_files - set(files)):
        stale = (out / rel).resolve()
        if root in stale.parents:  # never follow a damaged manifest outside the folder
            stale.unlink(missing_ok=True)
    sizes = {rel: (out / rel).stat().st_size for rel in files}
    _write_json(manifest_path, {"params": _manifest_key(params), "files": sizes})
    return out / "dataset.json"
