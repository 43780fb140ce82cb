"""Speed and exactness of the metrics engine (:mod:`dirbench.metrics`) against a literal reference.

A synthetic 160×224×192 pair with 35 labels is built (Voronoi regions inside a brain-sized ellipsoid
with rough boundaries; the moving segmentation is the fixed one warped by a smooth field v; the
displacement is ``-v`` plus rough noise, so Dice ≈ 0.9, HD95 ≈ 2 mm and ~1 % of the voxels fold;
``--initial`` evaluates the zero field instead). In one run, each metric is timed for the engine
(best of ``--repeat``) and for the straightforward reference of ``tests/metrics_reference.py``
(per-label full-volume masks, ``map_coordinates``, ``scipy.ndimage.correlate``, explicit surfel
lists with a k-d tree, ``np.linalg.det`` per tetrahedron; run once), and the values are checked:
warping, Dice, HD95 and %|J|≤0 identical, SDlogJ and NDV to 1e-6 relative. When the PyPI package
``surface-distance`` (DeepMind, the LUMIR evaluator's) is installed its HD95 is timed too.

Times are wall seconds with the process CPU seconds beside them (the machine may be shared: compare
ratios measured in the same run). ``evaluate_pair`` shares one warp, one label pass and one Jacobian
pass between the metrics; its peak traced memory (numpy allocations, ``tracemalloc``) is reported.

``--io``: the evaluation **including I/O**, as ``dirbench evaluate --dataset … --disp-dir …`` runs it
(:func:`dirbench.evaluation.evaluate_dataset`): the pair is written as ``.nii.gz`` files (float32 displacement
``[X, Y, Z, 3]`` as ``dirbench register`` writes it, label maps, the moving image for the NDV mask) with a
``dataset.json`` listing it ``--pairs`` times, and the whole list is evaluated (read the displacement and the
segmentations, every metric, the CSV rows): seconds per pair, best of ``--repeat``. Beside it, in the same run,
the reading of each file through nibabel's own gzip reader (``nib.load``, the reference) and through
:mod:`dirbench.io` (one-call gzip decoding, ISA-L when python-isal is installed), and the Table 1 evaluation
time extrapolated: 13 rows × 200 pairs (Initial and Greedy included).

Usage::

    python benchmarks/metrics.py [--initial] [--repeat 3] [--threads N] [--seed 0]
    python benchmarks/metrics.py --io [--pairs 4]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import metrics_reference as ref
from dirbench import metrics
from dirbench.metrics.jacobian import jacobian_pass

SHAPE = (160, 224, 192)
LABELS = list(range(1, 36))


def smooth_field(shape: tuple[int, ...], sigma: float, amp: float, rng: np.random.Generator) -> np.ndarray:
    """``[*shape, 3]`` float32 Gaussian-smoothed white noise with standard deviation ``amp`` voxels."""
    noise = [rng.standard_normal(shape, dtype=np.float32) for _ in range(3)]
    f = np.stack([ndi.gaussian_filter(n, sigma) for n in noise], axis=-1)
    return f * np.float32(amp / f.std())


def synthetic_pair(
    shape: tuple[int, int, int] = SHAPE, n_labels: int = 35, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fixed_seg, moving_seg, disp, moving_image): a registered-looking brain-sized pair."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32) - 1) / 2
    radii = np.array(shape, np.float32) * np.float32(0.41)
    brain = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
    del grid
    inside = np.argwhere(brain)
    seeds = inside[rng.choice(len(inside), n_labels, replace=False)]
    seed_img = np.zeros(shape, np.int32)
    seed_img[tuple(seeds.T)] = np.arange(1, n_labels + 1)
    _, nearest = ndi.distance_transform_edt(seed_img == 0, return_indices=True)
    voronoi = seed_img[tuple(nearest)]
    del nearest
    voronoi[~brain] = 0
    fixed = metrics.warp_labels(voronoi, smooth_field(shape, 2.5, 2.0, rng))  # rough boundaries
    v = smooth_field(shape, 6.0, 3.0, rng)
    moving = metrics.warp_labels(fixed, v)  # moving(y) = fixed(y + v(y))
    disp = -v + smooth_field(shape, 1.0, 0.3, rng)  # ≈ the inverse, with folds
    image = np.where(moving > 0, 100.0, 0.0).astype(np.float32)
    return fixed, moving, disp.astype(np.float32), image


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float, float]:
    """(result, best wall s, CPU s of that run)."""
    best = (math.inf, math.inf)
    out = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return out, best[0], best[1]


def same(a: Any, b: Any, rel: float | None = None) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if rel is None:
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.allclose(a, b, rtol=rel, atol=0, equal_nan=True))


def io_benchmark(args: argparse.Namespace) -> int:
    """``--io``: end-to-end evaluation per pair (files on disk, metrics, CSV) and the file reading beside nibabel's."""
    import json
    import tempfile

    import nibabel as nib
    from dirbench import io
    from dirbench.dataset import Dataset
    from dirbench.evaluation import evaluate_dataset

    fixed, moving, disp, image = synthetic_pair(seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="dirbench-evalio-") as tmp:
        root = Path(tmp)
        affine = np.eye(4)
        io.save_image(root / "img0001.nii.gz", np.where(fixed > 0, 100.0, 0.0).astype(np.float32), affine)
        io.save_image(root / "img0002.nii.gz", image, affine)
        io.save_labels(root / "seg0001.nii.gz", fixed, affine)
        io.save_labels(root / "seg0002.nii.gz", moving, affine)
        records = [{"image": "./img0001.nii.gz", "label": "./seg0001.nii.gz"},
                   {"image": "./img0002.nii.gz", "label": "./seg0002.nii.gz"}]
        spec = {"name": "evalio", "tensorImageShape": {"0": list(SHAPE)},
                "labels": {str(k): f"label_{k}" for k in LABELS}, "training": records,
                "test": [{"fixed": "./img0001.nii.gz", "moving": "./img0002.nii.gz"}] * args.pairs}
        (root / "dataset.json").write_text(json.dumps(spec))
        dataset = Dataset.load(root / "dataset.json")
        io.save_disp(root / "disp" / dataset.pairs("test")[0].disp_name, disp, affine)
        files = {"displacement": root / "disp" / dataset.pairs("test")[0].disp_name,
                 "moving image": root / "img0002.nii.gz", "fixed labels": root / "seg0001.nii.gz"}
        print(f"synthetic pair {SHAPE}, {len(LABELS)} labels; files: "
              + ", ".join(f"{k} {p.stat().st_size / 2**20:.1f} MiB" for k, p in files.items()))
        print(f"\n{'file read':18s} {'nib.load s':>11s} {'dirbench.io s':>14s} {'ratio':>6s}")
        for name, path in files.items():
            _, ref_s, _ = timed(lambda path=path: np.asanyarray(nib.load(str(path)).dataobj), args.repeat)
            _, ours_s, _ = timed(lambda path=path: io._load(path), args.repeat)
            print(f"{name:18s} {ref_s:11.3f} {ours_s:14.3f} {ours_s / ref_s:6.2f}")

        def run() -> float:
            t0 = time.perf_counter()
            evaluate_dataset(dataset, "test", root / "out.csv", method="evalio", disp_dir=root / "disp",
                             threads=args.threads, progress=False)
            return (time.perf_counter() - t0) / args.pairs

        per_pair = min(run() for _ in range(args.repeat))
        _, compute_s, _ = timed(lambda: metrics.evaluate_pair(disp, fixed_seg=fixed, moving_seg=moving, labels=LABELS,
                                                              moving_image=image, threads=args.threads), args.repeat)
    print(f"\nevaluate_dataset, {args.pairs} pairs: {per_pair:.3f} s per pair including I/O and CSV "
          f"(metrics alone, arrays in memory: {compute_s:.3f} s; I/O and the rest: {per_pair - compute_s:.3f} s)")
    total = per_pair * 200 * 13
    print(f"Table 1 (200 pairs × 13 rows, from this per-pair time): {total:.0f} s = {total / 60:.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--initial", action="store_true", help="evaluate the zero field instead")
    parser.add_argument("--repeat", type=int, default=3, help="engine timings: best of N")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: cores, ≤ 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--io", action="store_true", help="time the evaluation including reading the files")
    parser.add_argument("--pairs", type=int, default=4, help="--io: pairs in the evaluated list")
    args = parser.parse_args(argv)
    if args.io:
        return io_benchmark(args)

    t0 = time.perf_counter()
    fixed, moving, disp, image = synthetic_pair(seed=args.seed)
    if args.initial:
        disp = np.zeros_like(disp)
    mask = image > 0
    print(f"synthetic pair {SHAPE}, {len(LABELS)} labels, built in {time.perf_counter() - t0:.1f} s")
    th, rep = args.threads, args.repeat

    rows = []
    warped, e_wall, e_cpu = timed(lambda: metrics.warp_labels(moving, disp, th), rep)
    warped_ref, r_wall, r_cpu = timed(lambda: ref.warp_labels(moving, disp))
    rows.append(("warp (NN labels)", e_wall, e_cpu, r_wall, r_cpu, same(warped, warped_ref)))
    d, e_wall, e_cpu = timed(lambda: metrics.compute_dice(fixed, moving, warped, LABELS), rep)
    d_ref, r_wall, r_cpu = timed(lambda: ref.dice(fixed, moving, warped, LABELS))
    rows.append(("Dice", e_wall, e_cpu, r_wall, r_cpu, same(d, d_ref)))
    h, e_wall, e_cpu = timed(lambda: metrics.compute_hd95(fixed, moving, warped, LABELS, threads=th), rep)
    h_ref, r_wall, r_cpu = timed(lambda: ref.hd95(fixed, moving, warped, LABELS))
    rows.append(("HD95", e_wall, e_cpu, r_wall, r_cpu, same(h, h_ref)))
    s, e_wall, e_cpu = timed(lambda: metrics.compute_sdlogj(disp, threads=th), rep)
    s_ref, r_wall, r_cpu = timed(lambda: ref.sdlogj(disp))
    rows.append(("SDlogJ", e_wall, e_cpu, r_wall, r_cpu, same(s, s_ref, 1e-6)))

    def engine_ndv() -> tuple[float, float]:
        res = jacobian_pass(disp, mask[1:-1, 1:-1, 1:-1], want_ndv=True, want_folds=True, threads=th)
        return res.ndv, res.nondiff_voxels

    (n, f), e_wall, e_cpu = timed(engine_ndv, rep)
    (n_ref, f_ref), r_wall, r_cpu = timed(lambda: ref.ndv_and_nondiff_voxels(disp, mask))
    rows.append(("NDV + %|J|<=0", e_wall, e_cpu, r_wall, r_cpu, same(n, n_ref, 1e-6) and same(f, f_ref)))

    official = None
    try:
        import surface_distance as sd
    except ImportError:
        sd = None
    if sd is not None:
        if not hasattr(np, "Inf"):
            np.Inf = np.inf  # the packaged copy predates numpy 2  # type: ignore[attr-defined]

        def deepmind() -> np.ndarray:
            out = []
            for lab in LABELS:
                surf = sd.compute_surface_distances(fixed == lab, warped == lab, np.ones(3))
                out.append(sd.compute_robust_hausdorff(surf, 95.0))
            return np.array(out)

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            official = timed(deepmind)

    def pair(threads: int | None = th) -> metrics.PairMetrics:
        return metrics.evaluate_pair(
            disp, fixed_seg=fixed, moving_seg=moving, labels=LABELS, moving_image=image, threads=threads
        )

    result, p_wall, p_cpu = timed(pair, rep)
    _, s_wall, s_cpu = timed(lambda: pair(1), rep)
    tracemalloc.start()
    pair()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    print(f"\ncase: {'zero field (initial)' if args.initial else 'registered-like field'}; values: "
          + ", ".join(f"{k} {v:.4f}" for k, v in result.case_metrics().items()))
    head = f"{'metric':18s} {'engine s':>9s} {'(cpu)':>7s} {'reference s':>12s} {'(cpu)':>7s} {'ratio':>7s}"
    print(f"\n{head}  same")
    tot = [0.0, 0.0, 0.0, 0.0]
    for name, ew, ec, rw, rc, ok in rows:
        tot = [tot[0] + ew, tot[1] + ec, tot[2] + rw, tot[3] + rc]
        print(f"{name:18s} {ew:9.3f} {ec:7.2f} {rw:12.2f} {rc:7.1f} {rw / ew:6.0f}x  {'yes' if ok else 'NO'}")
    print(f"{'sum':18s} {tot[0]:9.3f} {tot[1]:7.2f} {tot[2]:12.2f} {tot[3]:7.1f} {tot[2] / tot[0]:6.0f}x")
    print(f"{'evaluate_pair':18s} {p_wall:9.3f} {p_cpu:7.2f} {'':12s} {'':7s} {tot[2] / p_wall:6.0f}x"
          f"  (all metrics, shared work; peak traced memory {peak / 2**30:.2f} GiB)")
    print(f"{'  one thread':18s} {s_wall:9.3f} {s_cpu:7.2f}")
    if official is not None:
        ok = same(official[0], h)
        print(f"DeepMind surface-distance HD95: {official[1]:.2f} s (cpu {official[2]:.1f}), "
              f"{official[1] / rows[2][1]:.0f}x the engine's; identical: {'yes' if ok else 'NO'}")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
