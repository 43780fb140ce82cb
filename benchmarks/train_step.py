"""Training-step time and peak memory of every registration network, beside the official figures or the authors' code.

The step is the paper's (Liu, Ruan & Sheng, MIDL 2025, App. A): forward, the
loss ``1 − NCC²`` (9³ box window, :func:`methods.losses.ncc_vfa`) ``+ 1.0 × diffusion`` on the final
full-resolution field (:func:`methods.losses.registration_loss`, symmetric for inverse-consistent models),
backward, and an Adam (amsgrad, lr 1e-4) update; batch 1 on synthetic smooth volumes.

Two modes:

- **Default**: each method in its own subprocess; reported per method: trainable parameters, the median wall
  time of ``--steps`` steps after ``--warmup`` untimed ones (and their process CPU time), the median inference
  pass, and the peak memory (CPU: the process's peak resident set size, ``getrusage``, which includes the
  interpreter, torch and the model, about 400–500 MiB before any step; CUDA: ``max_memory_allocated``). On CPU the
  table puts the **official figures** beside ours (:data:`OFFICIAL`, the authors' unmodified code on a 2-core
  CPU with the 9³ conv3d NCC, measured once by the project and committed here, not in this run)
  with the ratios ours ÷ official. Those figures include the authors' conv3d NCC, which costs more than some
  whole networks; the side-by-side mode is the comparison at equal numerics.
- **Side by side** (``--side-by-side``): the authors' network and ours, built by :func:`upstream.build_pair`
  from the checkouts named by the ``DIRBENCH_UPSTREAM_*`` environment variables (an optional input, never in
  CI; see ``benchmarks/upstream.py``) with the same random weights, in float32, trained with the *same* loss
  (ours, on each side's displacement in our convention) on the same inputs. Per method: the largest difference of
  the first step's gradients relative to the largest gradient (:func:`upstream.gradient_gap`, floor 1; in float32
  it reflects the conditioning of the loss at random weights, e.g. the NCC's variance clamp and trilinear
  sampling's kinks: ``upstream_parity.py`` checks the gradients parameter by parameter in float64); step times
  in one process, interleaved (official, ours, ours, official, …; median of ``--steps``
  each after ``--warmup`` each); and each side's peak RSS in its own subprocess (the other model deleted, the
  high-water mark reset through ``/proc/self/clear_refs`` before the steps). The inverse-consistent models solve
  their inversions with the training tolerance (1e-2 voxel, at most 50 iterations) on both sides.

Usage::

    python benchmarks/train_step.py --size 64 96 64                      # every method, official figures beside
    python benchmarks/train_step.py --size 96 112 96 --methods dp-conv-mf,vfa
    python benchmarks/train_step.py --size 160 224 192 --device cuda --amp bf16 --channels-last
    DIRBENCH_UPSTREAM_DP=… python benchmarks/train_step.py --side-by-side --methods dp-conv-mf,voxelmorph
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: The official implementations' figures, measured once by the project (not in this run): unmodified
#: authors' code at its default config, 2-core AMD EPYC, torch 2.13 CPU, 2 threads, batch 1, median of 3 steps
#: after a warm-up, each model in its own process, loss 1 − NCC (9³ conv3d) + diffusion, Adam.
#: size → method → (train step s, peak RSS MiB). TransMorph's second figure was taken at 96×128×96 (its sides must
#: be divisible by 32): :data:`OFFICIAL_SIZE` runs ours there too.
OFFICIAL: dict[tuple[int, int, int], dict[str, tuple[float, float]]] = {
    (64, 96, 64): {
        "voxelmorph": (3.66, 998),
        "transmorph": (3.16, 1541),
        "vfa": (8.20, 2686),
        "sitreg": (14.63, 2808),
        "dp-conv-mf": (5.84, 1523),
        "dp-conv-c": (6.07, 2072),
        "dp-vfa": (10.13, 2739),
        "dp-convic-c": (15.33, 3168),
    },
    (96, 112, 96): {
        "voxelmorph": (9.34, 1583),
        "transmorph": (9.31, 2378),
        "vfa": (27.12, 6293),
        "sitreg": (43.53, 6177),
        "dp-conv-mf": (15.65, 3239),
        "dp-conv-c": (19.37, 3342),
        "dp-vfa": (28.17, 6130),
        "dp-convic-c": (57.52, 7451),
    },
}
#: Methods whose official figure at a given size was measured at another size (and ours is run there too).
OFFICIAL_SIZE: dict[tuple[int, int, int], dict[str, tuple[int, int, int]]] = {
    (96, 112, 96): {"transmorph": (96, 128, 96)},
}
#: The paper's Table 1 networks (config ``table1``), then the scaling variants of Fig. B2.
TABLE1 = (
    "voxelmorph", "transmorph", "vfa", "sitreg", "dp-conv-mf", "dp-conv-mfc", "dp-conv-c",
    "dp-convic-mf", "dp-convic-c", "dp-vfa", "dp-convic-mfc",
)
SCALING = ("voxelmorph-s", "voxelmorph-m", "voxelmorph-l", "dp-conv-mf-small", "dp-conv-mf-large")


def _images(size: tuple[int, ...], device: object, fmt: object = None) -> tuple[object, object]:
    """Two smooth synthetic images ``[1, 1, *size]`` in [0, 1] (seeded)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    images = F.avg_pool3d(torch.rand(2, 1, *size, generator=gen), 5, 1, 2).to(device)
    if fmt is not None:
        images = images.contiguous(memory_format=fmt)
    moving, fixed = images.split(1)
    return moving, fixed


def _rss_mib(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process, MiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match[1]) / 1024


def _reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (``VmHWM``) to the current RSS (Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _worker(args: argparse.Namespace) -> dict:
    """Build one model, run the steps, return the figures (runs inside the per-method subprocess)."""
    import torch

    import methods
    from methods.losses import registration_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    overrides: dict[str, object] = {}
    if args.checkpoint:  # activation checkpointing: the option's name differs between the families
        overrides = {"use_checkpoint": True} if args.worker == "transmorph" else {"checkpoint_levels": True}
    model = methods.build(args.worker, img_size=tuple(args.size), **overrides).to(device)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fmt = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    moving, fixed = _images(tuple(args.size), device, fmt)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")
    if args.compile:
        model = torch.compile(model)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def train_step() -> tuple[float, float]:
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        with amp:
            out = model(moving, fixed)
        loss, _, _ = registration_loss(moving, fixed, out)
        loss.backward()
        optimizer.step()
        sync()
        return time.perf_counter() - start, time.process_time() - cpu_start

    for _ in range(args.warmup):
        train_step()
    train, cpu = zip(*(train_step() for _ in range(args.steps)), strict=True)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    model.eval()
    infer = []
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            sync()
            start = time.perf_counter()
            with amp:
                model(moving, fixed)
            sync()
            if i >= args.warmup:
                infer.append(time.perf_counter() - start)
    return {
        "method": args.worker,
        "size": list(args.size),
        "params": params,
        "train_s": statistics.median(train),
        "train_min_s": min(train),
        "train_all_s": train,
        "train_cpu_s": statistics.median(cpu),
        "infer_s": statistics.median(infer),
        "peak_mib": peak,
        "peak_kind": "CUDA max allocated" if device.type == "cuda" else "peak RSS",
    }


# ------------------------------------------------------------------------------------------- side by side


def _pair_step(model: object, run: Callable, moving: object, fixed: object) -> Callable[[], float]:
    """A training step (forward through ``run``, our loss, backward, Adam amsgrad) of one side; returns its seconds."""
    import torch

    from methods.losses import registration_loss
    from methods.registry import RegistrationOutput

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)  # type: ignore[attr-defined]

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        disp, inverse = run(moving, fixed)
        loss, _, _ = registration_loss(moving, fixed, RegistrationOutput(disp, inverse))
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def _pair_worker(args: argparse.Namespace) -> dict:
    """Side-by-side figures of one method (inside its subprocess): gradients and interleaved times, or one side's
    peak memory (``--memory-side``)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import upstream

    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    try:
        pair = upstream.build_pair(args.worker, size, dtype=torch.float32, solver_tol=1e-2, max_iter=50)
    except upstream.UpstreamUnavailable as exc:
        return {"method": args.worker, "error": f"not built: {exc}"}
    moving, fixed = _images(size, "cpu")
    if args.memory_side:
        official = args.memory_side == "official"
        model, run = (pair.official, pair.run_official) if official else (pair.ours, pair.run_ours)
        del pair
        gc.collect()
        model.train()
        step = _pair_step(model, run, moving, fixed)
        _reset_peak_rss()
        before = _rss_mib("VmRSS")
        for _ in range(args.warmup + 1):
            step()
        return {"method": args.worker, "side": args.memory_side, "peak_mib": _rss_mib("VmHWM"),
                "before_mib": before}

    gap, where = upstream.gradient_gap(pair, moving, fixed, floor=1.0)
    pair.official.train()
    pair.ours.train()
    steps = {"official": _pair_step(pair.official, pair.run_official, moving, fixed),
             "ours": _pair_step(pair.ours, pair.run_ours, moving, fixed)}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {"official": [], "ours": []}
    for i in range(args.steps):
        for side in ("official", "ours") if i % 2 == 0 else ("ours", "official"):
            times[side].append(steps[side]())
    return {
        "method": args.worker,
        "size": list(size),
        "grad_gap": gap,
        "grad_gap_param": where,
        "official_s": statistics.median(times["official"]),
        "ours_s": statistics.median(times["ours"]),
        "official_all_s": times["official"],
        "ours_all_s": times["ours"],
    }


# ------------------------------------------------------------------------------------------------- driver


def _subprocess(name: str, args: argparse.Namespace, size: tuple[int, int, int], extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--size", *map(str, size)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    cmd += ["--amp", args.amp, "--threads", str(args.threads), *extra]
    if args.channels_last:
        cmd.append("--channels-last")
    if args.compile:
        cmd.append("--compile")
    if args.checkpoint:
        cmd.append("--checkpoint")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"method": name, "error": f"timed out after {args.timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        err = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"method": name, "error": err}
    return json.loads(lines[-1])


def _method_size(name: str, size: tuple[int, int, int]) -> tuple[int, int, int]:
    return OFFICIAL_SIZE.get(size, {}).get(name, size)


def _table(rows: list[dict], args: argparse.Namespace) -> str:
    size = tuple(args.size)
    plain = args.device == "cpu" and args.amp == "none" and not (args.channels_last or args.compile or args.checkpoint)
    official = OFFICIAL.get(size, {}) if plain else {}
    peak_kind = "CUDA max alloc" if args.device.startswith("cuda") else "peak RSS"
    head = f"| method | size | params | train step s, median of {args.steps} (min) | process CPU s | inference s "
    head += f"| {peak_kind} MiB |"
    align = "|---|---|---:|---:|---:|---:|---:|"
    if official:
        head += " official step s | official peak RSS MiB | time ÷ official | memory ÷ official |"
        align += "---:|---:|---:|---:|"
    lines = [head, align]
    for r in rows:
        cells = [r["method"], "×".join(map(str, r.get("size", size)))]
        if "error" in r:
            cells += ["–", f"error: {r['error']}", "–", "–", "–"]
        else:
            cells += [f"{r['params']:,}", f"{r['train_s']:.2f} ({r['train_min_s']:.2f})", f"{r['train_cpu_s']:.2f}",
                      f"{r['infer_s']:.2f}", f"{r['peak_mib']:.0f}"]
        if official:
            ref = official.get(r["method"])
            if ref is None:
                cells += ["–"] * 4
            elif "error" in r:
                cells += [f"{ref[0]:.2f}", f"{ref[1]:.0f}", "–", "–"]
            else:
                ratios = [f"{r['train_s'] / ref[0]:.2f}", f"{r['peak_mib'] / ref[1]:.2f}"]
                cells += [f"{ref[0]:.2f}", f"{ref[1]:.0f}", *ratios]
        lines.append("| " + " | ".join(cells) + " |")
    if official:
        lines.append("\nofficial: the authors' unmodified code with its 9³ conv3d NCC (figures committed in "
                     "OFFICIAL, not measured in this run); ours: separable NCC. Equal numerics: "
                     "--side-by-side.")
    return "\n".join(lines)


def _side_by_side_table(rows: list[dict]) -> str:
    head = ("| method | size | max grad gap (rel.) | official s | ours s | time ratio | official peak MiB "
            "| ours peak MiB | memory ratio |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | – | {r['error']} | | | | | | |")
            continue
        mem_o, mem_u = r.get("official_peak_mib"), r.get("ours_peak_mib")
        mem = [f"{mem_o:.0f}", f"{mem_u:.0f}", f"{mem_u / mem_o:.2f}"] if mem_o and mem_u else ["–", "–", "–"]
        cells = [r["method"], "×".join(map(str, r["size"])), f"{r['grad_gap']:.1e}", f"{r['official_s']:.2f}",
                 f"{r['ours_s']:.2f}", f"{r['ours_s'] / r['official_s']:.2f}", *mem]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _side_by_side(names: list[str], args: argparse.Namespace) -> list[dict]:
    rows = []
    size = tuple(args.size)
    for name in names:
        row = _subprocess(name, args, size, ["--side-by-side"])
        if "error" not in row:
            for side in ("official", "ours"):
                mem = _subprocess(name, args, size, ["--side-by-side", "--memory-side", side])
                row[f"{side}_peak_mib"] = mem.get("peak_mib")
                row[f"{side}_step_mib"] = mem["peak_mib"] - mem["before_mib"] if "peak_mib" in mem else None
        rows.append(row)
        if "error" in row:
            print(f"{name}: {row['error']}", flush=True)
        else:
            print(f"{name}: official {row['official_s']:.2f} s, ours {row['ours_s']:.2f} s "
                  f"({row['ours_s'] / row['official_s']:.2f}×), grad gap {row['grad_gap']:.1e}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs=3, default=[64, 96, 64], metavar=("X", "Y", "Z"))
    parser.add_argument("--methods", help="comma-separated names (default: Table 1's networks, then the scaling "
                        "variants; 'all' for every registered method)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast the forward pass")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d model and inputs")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (default mode)")
    parser.add_argument("--checkpoint", action="store_true", help="activation checkpointing (DP, DP-ConvIC, SITReg: "
                        "checkpoint_levels; TransMorph: use_checkpoint); a model without it fails with an error row")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per method")
    parser.add_argument("--side-by-side", action="store_true",
                        help="the authors' code beside ours at equal numerics (needs DIRBENCH_UPSTREAM_*)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory-side", choices=("official", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be ≥ 1 and --warmup ≥ 0")
    if args.worker:
        print(json.dumps(_pair_worker(args) if args.side_by_side else _worker(args)))
        return 0

    import methods  # the parent only needs the names

    if args.methods == "all":
        names = methods.available()
    elif args.methods:
        names = args.methods.split(",")
    else:
        names = [*TABLE1, *SCALING]
    unknown = sorted(set(names) - set(methods.available()))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; available: {', '.join(methods.available())}")
    setting = f"device {args.device}, amp {args.amp}, channels_last {args.channels_last}, compile {args.compile}, "
    setting += f"checkpointing {args.checkpoint}, "
    setting += f"threads {args.threads}"
    if args.side_by_side:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import upstream

        skipped = [n for n in names if n not in upstream.METHODS]
        rows = _side_by_side([n for n in names if n in upstream.METHODS], args)
        print(f"\nside by side, float32, {setting}; time: median of {args.steps} interleaved steps; memory: peak RSS "
              f"of each side in its own process\n\n{_side_by_side_table(rows)}")
        for name in skipped:
            print(f"no official builder: {name} ({upstream.NOT_BUILT.get(name, 'not in the paper')})")
    else:
        rows = []
        for name in names:
            row = _subprocess(name, args, _method_size(name, tuple(args.size)), [])
            rows.append(row)
            summary = row["error"] if "error" in row else f"{row['train_s']:.2f} s, {row['peak_mib']:.0f} MiB"
            print(f"{name}: {summary}", flush=True)
        print(f"\nsize {'x'.join(map(str, args.size))}, {setting}\n\n{_table(rows, args)}")
    if args.json:
        from dirbench.io import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"setting": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
