"""Registration with a trained checkpoint (or Greedy): one pair or a whole pair list.

Every displacement is written as ``[X, Y, Z, 3]`` float32 voxel units with the fixed image's affine
(``dirbench.io.save_disp``); a batch over a pair list writes ``disp_{fixed}_{moving}.nii.gz`` (fixed id
first, as LUMIR names them) and ``runtime.csv`` with each pair's wall time and peak memory. For a model that
also returns its inverse field (``RegistrationOutput.inverse``: the inverse-consistent models), the batch
writes it as ``inv_{fixed}_{moving}.nii.gz`` beside it: ``[X, Y, Z, 3]`` voxel units on the *moving* grid
(fixed → moving pull-back), with the moving image's affine; the evaluation turns it into ``ic_error``.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dirbench.checkpoint import load_checkpoint, rebuild_model
from dirbench.dataset import PairRecord
from dirbench.errors import UserError
from dirbench.io import atomic_path, load_affine, save_disp
from dirbench.native import NativeImage, NativePipeline
from dirbench.run_record import Preprocessing, RunRecord
from dirbench.runtime import autocast, peak_gpu_mib, peak_rss_mib, pick_device

__all__ = ["Registrar", "register_pairs"]

RUNTIME_COLUMNS = ["fixed", "moving", "seconds", "peak_rss_mib", "peak_gpu_mib"]


@dataclass
class Registrar:
    """Registers one pair of image files into a displacement array ``[X, Y, Z, 3]`` (and the inverse field
    ``[X, Y, Z, 3]`` on the moving grid, or None, for models that do not return one).

    Build it with :meth:`from_checkpoint` (a trained network) or :meth:`greedy` (the classic baseline).
    """

    register: Callable[[Path, Path], tuple[np.ndarray, np.ndarray | None]]
    device: torch.device
    name: str

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, device: str = "auto", amp: str = "none", **native: Any
    ) -> Registrar:
        """A trained network; its preprocessing comes from the checkpoint's run record, nowhere else.

        ``native`` goes to :class:`dirbench.native.NativePipeline` (``centre``, ``normalise``, ``modality``,
        ``note``).
        """
        dev = pick_device(device)
        state = load_checkpoint(checkpoint, map_location=dev)
        record = RunRecord.from_checkpoint(state, checkpoint)
        model = rebuild_model(state, checkpoint, dev)
        pipeline = NativePipeline(record.preprocessing, str(checkpoint), **native)
        return cls.from_model(model, record.preprocessing, record.run.method, dev, amp, pipeline)

    @classmethod
    def from_model(cls, model: torch.nn.Module, prep: Preprocessing, name: str, device: torch.device,
                   amp: str = "none", pipeline: NativePipeline | None = None) -> Registrar:
        """Register native images with ``model`` (in eval mode on ``device``) through the native pipeline.

        The pair is mapped onto the model's grid, registered, and the displacement mapped back onto the
        fixed image's grid, the inverse field (if the model gives one) onto the moving image's grid
        (:mod:`dirbench.native`); images already on the training grid pass through untouched.
        """
        pipeline = pipeline or NativePipeline(prep, name)

        def as_array(field: torch.Tensor) -> np.ndarray:
            """``[1, 3, X, Y, Z]`` → float32 ``[X, Y, Z, 3]``."""
            return field[0].float().permute(1, 2, 3, 0).cpu().numpy()

        @torch.no_grad()
        def run(fixed: Path, moving: Path) -> tuple[np.ndarray, np.ndarray | None]:
            pair = pipeline.prepare(fixed, moving)
            tensors = [torch.from_numpy(np.ascontiguousarray(a))[None, None].to(device)
                       for a in (pair.moving, pair.fixed)]
            with autocast(device, amp):
                out = model(*tensors)
            disp = pipeline.finish(as_array(out.disp), pair)
            return disp, None if out.inverse is None else pipeline.finish_inverse(as_array(out.inverse), pair)

        return cls(run, device, name)

    @classmethod
    def greedy(cls, config: dict[str, Any] | None = None) -> Registrar:
        """Greedy on the native grids. Both images are read and checked (:class:`dirbench.native.NativeImage`)
        before Greedy runs, since ITK reads a truncated gzip without complaint.
        """
        from methods.greedy import GreedyConfig, run_greedy, greedy_warp_to_disp  # noqa: I001
        import tempfile

        cfg = GreedyConfig.from_dict(config or {})

        def run(fixed: Path, moving: Path) -> tuple[np.ndarray, None]:
            fixed_grid = NativeImage.load(fixed).grid
            NativeImage.load(moving)
            with tempfile.TemporaryDirectory(prefix="greedy-") as tmp:
                warp_path = Path(tmp) / "warp.nii.gz"
                run_greedy(fixed, moving, warp_path, cfg, log=Path(tmp) / "greedy.log")
                # Moving affine = fixed affine: u in fixed voxel units, whatever the moving grid (dirbench.native).
                return greedy_warp_to_disp(warp_path, fixed_grid.affine), None

        return cls(run, torch.device("cpu"), "greedy")

    def __call__(self, fixed: Path, moving: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, float]]:
        """Register ``moving`` onto ``fixed``: the displacement, the inverse field (or None) and the cost
        (seconds, peak memory)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        disp, inverse = self.register(Path(fixed), Path(moving))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        cost = {
            "seconds": time.perf_counter() - t0,
            "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": peak_gpu_mib(self.device),
        }
        return disp, inverse, cost


def register_pairs(registrar: Registrar, pairs: list[PairRecord], out_dir: str | Path, overwrite: bool = False,
                   progress: bool = False) -> Path:
    """Register every pair into ``out_dir/disp_{fixed}_{moving}.nii.gz`` (and ``inv_{fixed}_{moving}.nii.gz``
    for a model that returns its inverse); returns ``runtime.csv``'s path.

    Pairs whose displacement already exists are skipped (unless ``overwrite``), so an interrupted batch
    resumes; their earlier runtime rows are kept. ``progress`` shows a tqdm bar on stderr when stderr is a
    terminal (never in a job log).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runtime_path = out_dir / "runtime.csv"
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    if runtime_path.exists() and not overwrite:
        with open(runtime_path, newline="") as fh:
            rows = {(r["fixed"], r["moving"]): r for r in csv.DictReader(fh)}
    if not pairs:
        raise UserError("no pairs to register")
    for pair in tqdm(pairs, desc=f"register {registrar.name}", unit="pair", disable=None if progress else True):
        target = out_dir / pair.disp_name
        if target.exists() and not overwrite and (pair.fixed.id, pair.moving.id) in rows:
            continue
        disp, inverse, cost = registrar(pair.fixed.image, pair.moving.image)
        if inverse is not None:  # written first: a pair counts as done once its disp_ file exists
            save_disp(out_dir / pair.inverse_name, inverse, load_affine(pair.moving.image))
        save_disp(target, disp, load_affine(pair.fixed.image))
        rows[(pair.fixed.id, pair.moving.id)] = {"fixed": pair.fixed.id, "moving": pair.moving.id, **cost}
        _write_runtime(runtime_path, rows.values())
    return runtime_path


def _write_runtime(path: Path, rows: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUNTIME_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
