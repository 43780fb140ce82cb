"""Greedy (Yushkevich et al., 2016) as the classic baseline, run as a subprocess.

Liu, Ruan & Sheng (MIDL 2025) report Greedy with the settings of Jena et al. ("Magic-or-Mirage",
``greedy_registration.sh``)::

    greedy -d 3 -i fixed.nii.gz moving.nii.gz -o warp.nii.gz -m WNCC 2x2x2 -n 100x100x40 -s 1.5mm 0.5mm

Greedy writes its deformation as a NIfTI of shape ``[X, Y, Z, 1, 3]`` on the fixed grid holding, for each
fixed voxel, the *physical* displacement in mm in ITK's LPS world frame that is added to the fixed point to
find the matching moving point (checked with ``picsl_greedy`` itself: a constant warp of +1 mm along LPS x
makes Greedy's own reslicer pull from the moving voxel at fixed index + inv(A)·(−1, 0, 0) under RAS affine
A). :func:`greedy_warp_to_disp` turns that into the harness convention: a float32 ``[X, Y, Z, 3]``
displacement ``u`` in voxel units on the fixed grid with ``warped(x) = moving(x + u(x))``.

This module uses only numpy, nibabel and subprocess (it must not import ``dirbench``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from methods.config import Config, setting

__all__ = [
    "GreedyConfig",
    "GreedyError",
    "build_command",
    "greedy_warp_to_disp",
    "register_pair",
    "run_greedy",
]

PathLike = str | os.PathLike

# NIfTI/nibabel world coordinates are RAS; ITK (hence Greedy) world coordinates are LPS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_METRICS_WITH_RADIUS = frozenset({"NCC", "WNCC"})
_METRICS = _METRICS_WITH_RADIUS | {"SSD", "MI", "NMI", "MAHAL"}


class GreedyError(RuntimeError):
    """Greedy could not run or failed; the message names the input files and carries Greedy's own error."""


@dataclass(frozen=True)
class GreedyConfig(Config):
    """Greedy's deformable-registration options (defaults: Jena et al., as used by Liu et al. 2025).

    Every field's help text says what it sets; :class:`methods.config.Config` gives ``from_dict`` (typed,
    errors naming the key), ``to_dict`` and the command-line flags.
    """

    metric: str = setting("WNCC", "-m: similarity metric", tuple(sorted(_METRICS)))
    metric_radius: str | None = setting("2x2x2", "patch radius in voxels for NCC / WNCC, e.g. 2x2x2; null for others")
    iterations: str = setting("100x100x40", "-n: iterations per multi-resolution level, coarse to fine")
    smoothing: tuple[str, str] = setting(
        ("1.5mm", "0.5mm"), "-s: sigmas of the update-field and warp smoothing, with units mm or vox"
    )
    threads: int | None = setting(None, "-threads N (default: all cores)")
    warp_precision: float | None = setting(
        None, "-wp: precision in voxels of the saved warp (default Greedy's 0.1 voxel; 0: unrounded)"
    )
    executable: str = setting("greedy", "the Greedy command (a name on PATH or beside this Python, or a path)")
    extra_args: tuple[str, ...] = setting((), "further arguments appended verbatim, e.g. [-noise, 0]")

    def __post_init__(self) -> None:
        # Greedy silently falls back to SSD for an unknown metric name, so check the name here.
        if self.metric not in _METRICS:
            raise ValueError(f"metric: unknown metric {self.metric!r}; use one of {sorted(_METRICS)}")
        if (self.metric in _METRICS_WITH_RADIUS) != (self.metric_radius is not None):
            need = "needs" if self.metric in _METRICS_WITH_RADIUS else "takes no"
            raise ValueError(f"metric_radius: metric {self.metric} {need} a radius")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: need a positive integer or null, got {self.threads!r}")
        if self.warp_precision is not None and self.warp_precision < 0:
            raise ValueError(f"warp_precision: need >= 0 or null, got {self.warp_precision!r}")


def build_command(fixed_path: PathLike, moving_path: PathLike, out_warp_path: PathLike, config: GreedyConfig,
                  executable: str | None = None) -> list[str]:
    """The Greedy argument list for one pair (``executable`` replaces ``config.executable`` as ``argv[0]``)."""
    cmd = [executable or config.executable, "-d", "3", "-i", str(fixed_path), str(moving_path),
           "-o", str(out_warp_path), "-m", config.metric]
    if config.metric_radius is not None:
        cmd.append(config.metric_radius)
    cmd += ["-n", config.iterations, "-s", *config.smoothing]
    if config.threads is not None:
        cmd += ["-threads", str(int(config.threads))]
    if config.warp_precision is not None:
        cmd += ["-wp", f"{config.warp_precision:g}"]
    return cmd + list(config.extra_args)


def _resolve_executable(name: str) -> str:
    """Find ``name`` on PATH, else beside the running Python (a venv's console scripts), else fail."""
    if os.sep in name or (os.altsep and os.altsep in name):
        if not Path(name).is_file():
            raise GreedyError(f"Greedy executable {name!r} not found")
        return name
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise GreedyError(f"Greedy executable {name!r} not found on PATH or in {Path(sys.executable).parent}; "
                          "install picsl-greedy with this project (it provides the 'greedy' script) "
                          "or set GreedyConfig.executable")
    return found


def run_greedy(fixed_path: PathLike, moving_path: PathLike, out_warp_path: PathLike, config: GreedyConfig,
               log: PathLike | None = None) -> Path:
    """Register ``moving`` to ``fixed`` with Greedy; Greedy writes its 5-D LPS-mm warp to ``out_warp_path``.

    Greedy's stdout and stderr are written to ``log`` (if given) after the command line. Returns the warp path.

    Raises:
        GreedyError: an input is missing, the executable is not found, or Greedy fails; the message names
            the fixed and moving files and ends with Greedy's own error text.
    """
    for role, path in (("fixed", fixed_path), ("moving", moving_path)):
        if not Path(path).is_file():
            raise GreedyError(f"Greedy {role} image {str(path)!r}: file not found")
    out_warp_path = Path(out_warp_path)
    out_warp_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = build_command(fixed_path, moving_path, out_warp_path, config,
                        executable=_resolve_executable(config.executable))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(f"$ {subprocess.list2cmdline(cmd)}\n{proc.stdout}{proc.stderr}")
    what = f"Greedy failed registering moving {str(moving_path)!r} to fixed {str(fixed_path)!r}"
    if proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()[-2000:] or "(no output)"
        raise GreedyError(f"{what} (exit {proc.returncode}): {detail}")
    if not out_warp_path.is_file():
        raise GreedyError(f"{what}: it exited 0 but wrote no warp {str(out_warp_path)!r}")
    return out_warp_path


def greedy_warp_to_disp(warp: PathLike | nib.Nifti1Image, fixed_affine: np.ndarray,
                        moving_affine: np.ndarray | None = None) -> np.ndarray:
    """Convert a Greedy warp to the harness displacement: float32 ``[X, Y, Z, 3]``, voxel units, fixed grid.

    For fixed voxel index x (RAS affine ``A_f`` from nibabel), Greedy's warp holds ``d_LPS(x)`` in mm with
    moving point ``p = A_f·x + diag(-1, -1, 1)·d_LPS(x)`` (RAS). The harness displacement is that point's
    moving voxel index minus x::

        u(x) = inv(A_m)·(A_f·x + diag(-1, -1, 1)·d_LPS(x)) − x        (A_m = A_f unless moving_affine given)

    so that ``warped(x) = moving(x + u(x))`` with ``scipy.ndimage.map_coordinates``. With ``A_m = A_f`` this
    is ``inv(M_f)·diag(-1, -1, 1)·d_LPS`` (``M_f`` the 3×3 linear part): no orientation is hard-coded.

    Args:
        warp: Greedy's output file or image, shape ``[X, Y, Z, 1, 3]`` (mm, LPS).
        fixed_affine: 4×4 voxel-to-RAS affine of the fixed image (must match the warp's own affine).
        moving_affine: 4×4 voxel-to-RAS affine of the moving image, if its grid differs from the fixed one.

    Raises:
        ValueError: the warp is not ``[X, Y, Z, 1, 3]`` or its affine differs from ``fixed_affine``.
    """
    img = nib.load(str(warp)) if isinstance(warp, (str, os.PathLike)) else warp
    name = str(warp) if isinstance(warp, (str, os.PathLike)) else "Greedy warp"
    data = np.asarray(img.dataobj, dtype=np.float64)
    if data.ndim != 5 or data.shape[3:] != (1, 3):
        raise ValueError(f"{name}: expected a Greedy warp of shape [X, Y, Z, 1, 3], got {tuple(data.shape)}")
    a_fix = np.asarray(fixed_affine, dtype=np.float64)
    if not np.allclose(img.affine, a_fix, atol=1e-3):
        raise ValueError(f"{name}: warp affine\n{np.round(img.affine, 4)}\ndiffers from the fixed affine\n"
                         f"{np.round(a_fix, 4)}")
    a_mov_inv = np.linalg.inv(a_fix if moving_affine is None else np.asarray(moving_affine, dtype=np.float64))
    lin = a_mov_inv[:3, :3] @ _LPS_TO_RAS  # LPS mm -> moving voxel units
    grid_map = a_mov_inv @ a_fix - np.eye(4)  # fixed index x -> (moving index of A_f·x) − x, affine in x
    shape = data.shape[:3]
    axes = [np.arange(n, dtype=np.float64).reshape([-1 if k == j else 1 for k in range(3)])
            for j, n in enumerate(shape)]
    disp = np.empty((*shape, 3), dtype=np.float32)
    for c in range(3):
        offset = grid_map[c, 3] + sum(grid_map[c, j] * axes[j] for j in range(3))
        disp[..., c] = data[:, :, :, 0, :] @ lin[c] + offset
    return disp


def register_pair(fixed_path: PathLike, moving_path: PathLike, out_disp_path: PathLike, config: GreedyConfig,
                  workdir: PathLike | None = None, log: PathLike | None = None) -> np.ndarray:
    """Run Greedy on one pair and write the harness displacement NIfTI (float32, fixed affine), atomically.

    Greedy's own warp goes to a temporary folder (inside ``workdir`` if given) that is removed afterwards.

    Returns:
        The displacement, float32 ``[X, Y, Z, 3]`` in fixed-grid voxel units, ``warped(x) = moving(x + u(x))``.
    """
    out_disp_path = Path(out_disp_path)
    suffix = ".nii.gz" if out_disp_path.name.endswith(".nii.gz") else out_disp_path.suffix
    if suffix not in {".nii", ".nii.gz"}:
        raise ValueError(f"{out_disp_path}: displacement output must end in .nii or .nii.gz")
    with tempfile.TemporaryDirectory(prefix="greedy-", dir=workdir) as tmp:
        warp_path = run_greedy(fixed_path, moving_path, Path(tmp) / "warp.nii.gz", config, log=log)
        fixed_affine = nib.load(str(fixed_path)).affine
        moving_affine = nib.load(str(moving_path)).affine
        disp = greedy_warp_to_disp(warp_path, fixed_affine, moving_affine)
    img = nib.Nifti1Image(disp, fixed_affine)
    img.header.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm")
    out_disp_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_out = tempfile.mkstemp(prefix=f".{out_disp_path.name}.", suffix=f".tmp{suffix}", dir=out_disp_path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp_out)
        os.replace(tmp_out, out_disp_path)
    finally:
        Path(tmp_out).unlink(missing_ok=True)
    return disp
