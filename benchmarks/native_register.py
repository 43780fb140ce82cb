"""Wall time of one native registration with a trained checkpoint, step by step, beside the bare network.

A synthetic pair (smoothed noise inside an ellipsoid "head", the moving image a smoothly deformed copy) is
written on a native grid: by default LIA at 1 mm with the checkpoint's field of view (OASIS as stored,
e.g. 160×192×224 for a 160×224×192 RAS model), which maps onto the model grid by copying; ``--spacing
1.2`` gives a 1.2 mm grid, which is resampled. It is registered ``--repeats`` times through
:class:`dirbench.inference.Registrar` (file reading, checks, mapping onto the model grid, the network, the
field back onto the fixed grid, as ``dirbench register --checkpoint`` does) and written; in the same run
the steps are timed one by one, with the bare network on model-grid arrays (``network_s``) as the
reference. Medians are printed as JSON.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/native_register.py --checkpoint RUN_DIR/best.pt --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from dirbench.checkpoint import load_checkpoint, rebuild_model
from dirbench.field_formats import save_field
from dirbench.inference import Registrar
from dirbench.io import reorient
from dirbench.native import NativePipeline
from dirbench.run_record import Preprocessing, RunRecord
from dirbench.warp import warp_array
from scipy.ndimage import gaussian_filter, zoom

import methods


def _pair(shape: tuple[int, int, int], spacing: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed and moving RAS arrays at ``spacing`` mm covering ``shape`` mm, and their RAS affine."""
    rng = np.random.default_rng(seed)
    size = tuple(max(2, round(n / spacing)) for n in shape)
    coarse = gaussian_filter(rng.random(tuple(max(2, n // 4) for n in size)), 1.0)
    texture = zoom(coarse, [n / c for n, c in zip(size, coarse.shape, strict=True)], order=1)[tuple(map(slice, size))]
    grid = np.indices(size, dtype=np.float32)
    radius = sum(((grid[k] - (size[k] - 1) / 2) / (0.45 * size[k])) ** 2 for k in range(3))
    fixed = np.where(radius <= 1, texture / texture.max(), 0).astype(np.float32)
    field = np.stack([gaussian_filter(rng.standard_normal(size), 8) for _ in range(3)], axis=-1)
    moving = warp_array(fixed, 3.0 * field / np.abs(field).max())
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (np.array(size) - 1) / 2
    return fixed, moving, affine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a trained RUN_DIR/best.pt")
    source.add_argument("--method", help="an untrained network of this method on a 160×224×192 1 mm RAS grid "
                        "(the time does not depend on the weights)")
    parser.add_argument("--spacing", type=float, default=1.0, help="native voxel size in mm (LIA grid)")
    parser.add_argument("--repeats", type=int, default=3, help="timed registrations (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)
        record = RunRecord.from_checkpoint(state, args.checkpoint)
        prep, name = record.preprocessing, record.run.method
        model = rebuild_model(state, args.checkpoint, "cpu")
    else:
        prep = Preprocessing(1.0, (160, 224, 192), (1.0, 1.0, 1.0))
        model, name = methods.build(args.method, img_size=prep.shape).eval(), args.method
    source = str(args.checkpoint or name)
    fixed, moving, affine = _pair(prep.shape, args.spacing)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for role, array in (("fixed", fixed), ("moving", moving)):
            lia, lia_affine = reorient(array, affine, "LIA")
            nib.save(nib.Nifti1Image(lia, lia_affine), str(path := Path(tmp) / f"{role}.nii.gz"))
            paths.append(path)
        native_shape = nib.load(str(paths[0])).shape
        pipeline = NativePipeline(prep, source, note=lambda _: None)
        registrar = Registrar.from_model(model, prep, name, torch.device("cpu"), pipeline=pipeline)
        registrar(*paths)  # warm-up
        totals, steps = [], {"prepare_s": [], "network_s": [], "finish_s": [], "save_s": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            disp, _, _ = registrar(*paths)
            save_field(Path(tmp) / "disp.nii.gz", disp, nib.load(str(paths[0])).affine)
            totals.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            pair = pipeline.prepare(*paths)
            t1 = time.perf_counter()
            with torch.no_grad():
                v = model(torch.from_numpy(pair.moving)[None, None], torch.from_numpy(pair.fixed)[None, None]).disp
            t2 = time.perf_counter()
            u = pipeline.finish(v[0].permute(1, 2, 3, 0).numpy(), pair)
            t3 = time.perf_counter()
            save_field(Path(tmp) / "disp.nii.gz", u, pair.fixed_grid.affine)
            t4 = time.perf_counter()
            for key, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                steps[key].append(dt)
    print(json.dumps({
        "method": name, "checkpoint": str(args.checkpoint), "model_grid": list(prep.shape),
        "model_spacing_mm": list(prep.spacing),
        "native_grid": list(native_shape), "native_spacing_mm": args.spacing, "native_orientation": "LIA",
        "threads": args.threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg()[0], "repeats": args.repeats,
        "total_s": statistics.median(totals), "total_all_s": totals,
        **{key: statistics.median(values) for key, values in steps.items()},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
