"""Peak training memory of the inverse-consistent DP models, measured on CPU and extrapolated to full size.

One training step (forward + backward of the symmetric IC loss of Liu, Ruan & Sheng, MIDL 2025, §4:
``0.5 [NCC(fixed, moving∘Φ12) + NCC(moving, fixed∘Φ21)] + 0.5 [Grad(Φ12) + Grad(Φ21)]`` with
:func:`methods.losses.ncc_vfa` and :func:`methods.losses.diffusion`) runs in a fresh subprocess per
(model, size, options). The activation memory is the process's peak RSS (``getrusage``) minus its RSS
just before the step (model, inputs and libraries loaded). Memory model: ``activations = a + b · voxels``,
fitted by least squares over the measured sizes and evaluated at 160×224×192 (LUMIR / reoriented OASIS).

The children run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the RSS (glibc would
otherwise keep them in its heap and the peak RSS would overstate the live memory by ~40 %).
CPU RSS stands in for CUDA memory: the tensors autograd keeps are the same; a GPU adds the CUDA context
(~0.5 GB), cuDNN workspaces and caching-allocator slack (budget +10–20 %). Options:

- ``--bf16``: autocast to bfloat16 (the nets; the maps, B-splines and inversion stay float32);
- ``--ckpt``: ``checkpoint_levels=True`` (the feature extractor and each level's update net, one direction
  at a time, are recomputed in the backward pass);
- ``--direct-corr``: compute ``corr(b, a)`` as a second cost volume (what the paper's code does) instead of
  deriving it from ``corr(a, b)``, to measure what the derivation saves.

Usage::

    python benchmarks/ic_memory.py --models dp-convic-c dp-convic-mfc \\
        --sizes 32x48x32 48x64x48 64x96x64 --variants fp32 ckpt bf16 bf16+ckpt --json results/ic_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

FULL_SIZE = (160, 224, 192)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _child(model_name: str, size: tuple[int, int, int], bf16: bool, ckpt: bool, direct_corr: bool) -> dict:
    """One training step in this process; returns the measured figures."""
    import torch

    import methods
    from methods import dp_ic
    from methods.correlation import correlation
    from methods.losses import diffusion, ncc_vfa
    from methods.spatial import warp

    torch.manual_seed(0)
    if direct_corr:
        def direct(inputs: str, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            c_ab, c_ba = correlation(a, b), correlation(b, a)
            if inputs == "c":
                return torch.cat([c_ab, c_ba], 1), torch.cat([c_ba, c_ab], 1)
            return torch.cat([a, c_ab, c_ba, b], 1), torch.cat([b, c_ba, c_ab, a], 1)

        dp_ic.ic_decoder_inputs = direct  # the models look the function up at call time
    model = methods.build(model_name, img_size=size, checkpoint_levels=ckpt)
    moving = torch.rand(1, 1, *size)
    fixed = torch.rand(1, 1, *size)
    base = _rss_mb()
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(moving, fixed)
    sim = 0.5 * (ncc_vfa(fixed, warp(moving, out.disp)) + ncc_vfa(moving, warp(fixed, out.inverse)))
    loss = sim + 0.5 * (diffusion(out.disp) + diffusion(out.inverse))
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model_name, "size": list(size), "voxels": size[0] * size[1] * size[2], "bf16": bf16,
            "ckpt": ckpt, "direct_corr": direct_corr, "base_mb": round(base, 1), "peak_mb": round(peak, 1),
            "activations_mb": round(peak - base, 1), "seconds": round(seconds, 2)}


def _parse_size(text: str) -> tuple[int, int, int]:
    parts = tuple(int(p) for p in text.lower().split("x"))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"size must look like 64x96x64, got {text!r}")
    return parts  # type: ignore[return-value]


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b·x``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else my / mx
    return my - b * mx, b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["dp-convic-c", "dp-convic-mfc"])
    parser.add_argument("--sizes", nargs="+", type=_parse_size,
                        default=[(32, 48, 32), (48, 64, 48), (64, 96, 64)])
    parser.add_argument("--variants", nargs="+", default=["fp32", "ckpt", "bf16", "bf16+ckpt"],
                        help="'+'-joined subsets of {fp32, bf16, ckpt, direct-corr}")
    parser.add_argument("--json", type=Path, help="also write all rows and fits to this JSON file")
    parser.add_argument("--child", nargs=5, metavar=("MODEL", "SIZE", "BF16", "CKPT", "DIRECT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, size, bf16, ckpt, direct = args.child
        print(json.dumps(_child(name, _parse_size(size), bf16 == "1", ckpt == "1", direct == "1")))
        return 0

    # Every allocation of 64 kB or more gets its own mapping and is returned on free, so the peak RSS follows
    # the live tensors instead of glibc's heap high-water mark.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    for variant in args.variants:
        flags = set(variant.split("+"))
        unknown = flags - {"fp32", "bf16", "ckpt", "direct-corr"}
        if unknown:
            parser.error(f"unknown variant flag(s) {sorted(unknown)} in {variant!r}")
        for model in args.models:
            for size in args.sizes:
                cmd = [sys.executable, __file__, "--child", model, "x".join(map(str, size)),
                       str(int("bf16" in flags)), str(int("ckpt" in flags)), str(int("direct-corr" in flags))]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
                if done.returncode:
                    print(done.stderr, file=sys.stderr)
                    return done.returncode
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["variant"] = variant
                rows.append(row)
                print(
                    f"{variant:16s} {model:14s} {'x'.join(map(str, size)):10s} activations "
                    f"{row['activations_mb']:9.1f} MB  peak RSS {row['peak_mb']:9.1f} MB  "
                    f"{row['seconds']:7.1f} s",
                    flush=True,
                )
    full = FULL_SIZE[0] * FULL_SIZE[1] * FULL_SIZE[2]
    fits = []
    size = "x".join(map(str, FULL_SIZE))
    print(f"\nLinear fit activations = a + b·voxels, extrapolated to {size} ({full:,} voxels):")
    for variant in args.variants:
        for model in args.models:
            points = [(r["voxels"], r["activations_mb"]) for r in rows
                      if r["variant"] == variant and r["model"] == model]
            a, b = _fit(points)
            gb = (a + b * full) / 1024
            fits.append({"variant": variant, "model": model, "a_mb": a, "b_kb_per_voxel": b * 1024,
                         "full_gb": gb})
            print(f"  {variant:16s} {model:14s} a = {a:8.1f} MB  b = {b * 1024:7.2f} kB/voxel → {gb:6.1f} GB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "fits": fits, "full_size": FULL_SIZE}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
