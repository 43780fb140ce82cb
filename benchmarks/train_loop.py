"""Whole-training-loop throughput against the bare training step, in one run.

``benchmarks/train_step.py`` times one network's forward + backward + Adam step on tensors already in
memory. This script runs the real :class:`dirbench.training.Trainer` (pair sampling, the volume cache with
background prefetch, NIfTI decoding, the progress bar, checkpoints and ``metrics.csv`` every epoch) on a
synthetic dataset written to a temporary folder, and the same number of bare steps on the same model
settings, and prints both rates and their ratio: the loop's overhead over the network itself. Validation is
switched off so that only training is timed.

Usage::

    python benchmarks/train_loop.py --method dp-conv-mf --size 48 64 48 --steps 24
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dirbench.runtime import set_threads
from dirbench.train_config import TrainConfig
from dirbench.training import Trainer
from synthetic import make_dataset

import methods
from methods.losses import registration_loss


def bare_steps(method: str, size: tuple[int, int, int], steps: int) -> float:
    """Steps per second of forward + loss + backward + Adam on fixed in-memory tensors."""
    torch.manual_seed(0)
    model = methods.build(method, img_size=size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    moving, fixed = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    t0 = 0.0
    for k in range(steps + 1):
        if k == 1:  # the first step is a warm-up
            t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = registration_loss(moving, fixed, model(moving, fixed))[0]
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - t0)


def loop_steps(method: str, size: tuple[int, int, int], steps: int, threads: int) -> float:
    """Steps per second of the real training loop (data on disk, sampler, cache, checkpoints)."""
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp) / "data", n_train=8, n_eval=2, shape=size)
        cfg = TrainConfig(
            method=method, dataset=str(dataset), epochs=2, samples_per_epoch=steps, val_list="none",
            threads=threads, tensorboard=False,
        )  # fmt: skip
        summary = Trainer(cfg, Path(tmp) / "run").run(progress=False)
        return summary["updates"] / summary["train_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="dp-conv-mf")
    parser.add_argument("--size", type=int, nargs=3, default=(48, 64, 48))
    parser.add_argument("--steps", type=int, default=24, help="steps per measurement (even)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    size = tuple(args.size)
    bare = bare_steps(args.method, size, args.steps)
    loop = loop_steps(args.method, size, args.steps, threads)
    print(f"{args.method} at {size}, {threads} thread(s), {args.steps} steps each")
    print(f"| bare step | {bare:.3f} steps/s |")
    print(f"| training loop | {loop:.3f} steps/s |")
    print(f"| loop / bare | {loop / bare:.2f} |")


if __name__ == "__main__":
    main()
