"""Parity of our networks with their authors' code: same random weights, same inputs, max |Δ displacement| and Δgrad.

For each method, :func:`upstream.build_pair` builds the official network (from the checkouts named by the
``DIRBENCH_UPSTREAM_*`` environment variables, see ``benchmarks/upstream.py``) and ours, with every weight
randomised (flow heads included) and transplanted one-to-one, in float64. Both register the same pair of
smooth random images; the table gives the largest displacement, the largest difference of the displacements
(and of the inverses, for the inverse-consistent models), in voxels, against a tolerance:

- one-directional models: 1e-9 voxel (float64 round-off through a few hundred thousand operations);
- inverse-consistent models (DP-ConvIC, SITReg): both fixed-point inversions are solved to ``--solver-tol``
  (default 1e-6 voxel, max-abs change; the authors train with 1e-2) by the same Anderson iteration, so they
  normally agree to round-off too; the tolerance, 1e-5 voxel, allows for one solve stopping an iteration
  earlier than the other (round-off flipping a stop decision), whose effect is bounded by the solver's error.

and the gradients of the training loss (:func:`methods.losses.registration_loss` on each side's output) with
respect to every parameter: the largest ``max|g_official − g_ours| / max|g_official|`` over the parameters
(:func:`upstream.gradient_gap`), against 1e-6. TransMorph needs ``DIRBENCH_UPSTREAM_TRANSMORPH`` and timm /
ml_collections (or stand-ins) importable (see ``benchmarks/upstream.py``).

Never run by the tests or CI; the exit status is 1 if a comparison that ran failed. Usage::

    export DIRBENCH_UPSTREAM_DP=/path/to/Unsupervised-DL-DIR-Revisited DIRBENCH_UPSTREAM_SITREG=/path/to/SITReg
    export DIRBENCH_UPSTREAM_LUMIR=/path/to/LUMIR_L2R DIRBENCH_UPSTREAM_VFA=/path/to/vfa
    export DIRBENCH_UPSTREAM_TRANSMORPH=/path/to/TransMorph_Transformer_for_Medical_Image_Registration
    python benchmarks/upstream_parity.py                      # every method
    python benchmarks/upstream_parity.py --methods sitreg --gain-scale 3 --shape 32 32 32
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))

import upstream  # benchmarks/ is not a package: found through the sys.path entry above

#: Tolerance (voxels) of the one-directional models and of the inverse-consistent ones.
TOL_EXACT = 1e-9
TOL_IC = 1e-5
#: Tolerance of the relative gradient gap (:func:`upstream.gradient_gap`) of the training loss, all models.
TOL_GRAD = 1e-6


def smooth_images(shape: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two smooth random images ``[1, 1, *shape]`` in [0, 1], float64."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        image = gaussian_filter(rng.random(shape), 2.0)
        out.append(torch.from_numpy((image - image.min()) / (image.max() - image.min()))[None, None])
    return out[0], out[1]


def compare(method: str, args: argparse.Namespace) -> dict[str, object]:
    """One table row for ``method``."""
    pair = upstream.build_pair(
        method, args.shape, seed=args.seed, gain_scale=args.gain_scale, solver_tol=args.solver_tol
    )
    moving, fixed = smooth_images(pair.shape, args.seed)
    with torch.no_grad():
        start = time.perf_counter()
        disp_official, inverse_official = pair.run_official(moving, fixed)
        t_official = time.perf_counter() - start
        start = time.perf_counter()
        disp_ours, inverse_ours = pair.run_ours(moving, fixed)
        t_ours = time.perf_counter() - start
    delta = float((disp_official - disp_ours).abs().max())
    delta_inverse = None
    if inverse_official is not None and inverse_ours is not None:
        delta_inverse = float((inverse_official - inverse_ours).abs().max())
    tol = TOL_IC if method in upstream.IC_METHODS else TOL_EXACT
    worst = max(delta, delta_inverse or 0.0)
    grad_gap, grad_where = upstream.gradient_gap(pair, moving, fixed)
    return {
        "method": method,
        "shape": "×".join(map(str, pair.shape)),
        "max_disp": float(disp_official.abs().max()),
        "delta": delta,
        "delta_inverse": delta_inverse,
        "tol": tol,
        "grad_gap": grad_gap,
        "grad_where": grad_where,
        "pass": bool(worst <= tol and grad_gap <= TOL_GRAD),
        "seconds": (t_official, t_ours),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=[*upstream.METHODS, *upstream.NOT_BUILT])
    parser.add_argument("--shape", nargs=3, type=int, default=None, help="X Y Z (default: per method)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gain-scale", type=float, default=1.0, help="scale the flow heads' random weights")
    parser.add_argument("--solver-tol", type=float, default=1e-6, help="fixed-point inversion stop (voxel)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="torch.meshgrid")  # VoxelMorph's upstream grid

    header = f"{'method':<14} {'shape':<10} {'max|disp|':>9} {'max|Δdisp|':>11} {'max|Δinv|':>10} {'tol':>7}"
    header += f" {'Δgrad rel':>10}  pass"
    print(header)
    print("-" * len(header))
    failed = False
    skipped = []
    for method in args.methods:
        if method in upstream.NOT_BUILT:
            skipped.append(f"{method}: {upstream.NOT_BUILT[method]}")
            continue
        try:
            row = compare(method, args)
        except upstream.UpstreamUnavailable as exc:
            skipped.append(f"{method}: {exc}")
            continue
        inverse = "—" if row["delta_inverse"] is None else f"{row['delta_inverse']:.1e}"
        print(
            f"{row['method']:<14} {row['shape']:<10} {row['max_disp']:>9.2f} {row['delta']:>11.1e} {inverse:>10} "
            f"{row['tol']:>7.0e} {row['grad_gap']:>10.1e}  {'yes' if row['pass'] else 'NO'}"
        )
        failed |= not row["pass"]
    for line in skipped:
        print(f"not compared: {line}")
    print(f"(float64, seed {args.seed}, solver tol {args.solver_tol:g}, gain scale {args.gain_scale:g}; voxels)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
