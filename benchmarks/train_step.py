"""Training-step time and peak memory of every registration network, one fresh process per method.

The step is the paper's (Liu, Ruan & Sheng, MIDL 2025, App. A; ``spec/methods-dp.md`` §4): forward, the
loss ``1 − NCC²`` (9³ box window, :func:`methods.losses.ncc_vfa`) ``+ 1.0 × diffusion`` on the final
full-resolution field (:func:`methods.losses.registration_loss`, symmetric for inverse-consistent models),
backward, and an Adam (amsgrad, lr 1e-4) update; batch 1 on synthetic smooth volumes.

Reported per method: trainable parameters; the median wall time of ``--steps`` training steps after
``--warmup`` untimed ones, and their median process CPU time (all threads; on a shared machine it varies
less than the wall time); the median of as many inference passes (``eval()``, ``inference_mode``); and
the peak memory: on CPU the process's peak resident set size (``getrusage``, which includes the Python
interpreter, torch and the model: about 400–500 MiB before any step), on CUDA ``max_memory_allocated``.
Each method runs in its own subprocess so that peaks do not mix; a method that cannot run at the size
(e.g. TransMorph needs sides divisible by 32) is reported with its error.

Usage::

    python benchmarks/train_step.py --size 64 96 64 --methods dp-conv-mf,dp-vfa,vfa
    python benchmarks/train_step.py --size 160 224 192 --device cuda --amp bf16 --channels-last
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _worker(args: argparse.Namespace) -> dict:
    """Build one model, run the steps, return the figures (runs inside the per-method subprocess)."""
    import torch
    import torch.nn.functional as F

    import methods
    from methods.losses import registration_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = methods.build(args.worker, img_size=tuple(args.size)).to(device)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fmt = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    # smooth synthetic images in [0, 1]
    images = F.avg_pool3d(torch.rand(2, 1, *args.size, device=device), 5, 1, 2)
    moving, fixed = (t.contiguous(memory_format=fmt) for t in images.split(1))
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")

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
        "params": params,
        "train_s": statistics.median(train),
        "train_min_s": min(train),
        "train_all_s": train,
        "train_cpu_s": statistics.median(cpu),
        "infer_s": statistics.median(infer),
        "peak_mib": peak,
        "peak_kind": "CUDA max allocated" if device.type == "cuda" else "peak RSS",
    }


def _run_one(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--size", *map(str, args.size)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    cmd += ["--amp", args.amp, "--threads", str(args.threads)]
    if args.channels_last:
        cmd.append("--channels-last")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"method": name, "error": f"timed out after {args.timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        err = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"method": name, "error": err}
    return json.loads(lines[-1])


def _table(rows: list[dict], args: argparse.Namespace) -> str:
    peak_kind = "CUDA max alloc" if args.device.startswith("cuda") else "peak RSS"
    head = f"| method | params | train step s, median of {args.steps} (min) | process CPU s | inference s "
    head += f"| {peak_kind} MiB |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | – | error: {r['error']} | – | – | – |")
        else:
            train = f"{r['train_s']:.2f} ({r['train_min_s']:.2f})"
            cells = [r["method"], f"{r['params']:,}", train, f"{r['train_cpu_s']:.2f}",
                     f"{r['infer_s']:.2f}", f"{r['peak_mib']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs=3, default=[64, 96, 64], metavar=("X", "Y", "Z"))
    parser.add_argument("--methods", help="comma-separated names (default: every registered method)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast the forward pass")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d model and inputs")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per method")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be ≥ 1 and --warmup ≥ 0")
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0

    import methods  # the parent only needs the names

    names = args.methods.split(",") if args.methods else methods.available()
    unknown = sorted(set(names) - set(methods.available()))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; available: {', '.join(methods.available())}")
    rows = []
    for name in names:
        row = _run_one(name, args)
        rows.append(row)
        summary = row["error"] if "error" in row else f"{row['train_s']:.2f} s, {row['peak_mib']:.0f} MiB"
        print(f"{name}: {summary}", flush=True)
    setting = f"size {'x'.join(map(str, args.size))}, device {args.device}, amp {args.amp}, "
    setting += f"channels_last {args.channels_last}, threads {args.threads}"
    print(f"\n{setting}\n\n{_table(rows, args)}")
    if args.json:
        from dirbench.io import atomic_path

        with atomic_path(args.json) as tmp:
            setting = vars(args) | {"json": str(args.json)}
            tmp.write_text(json.dumps({"setting": setting, "rows": rows}, indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
