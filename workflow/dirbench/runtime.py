"""Execution environment helpers: device choice, thread count, peak memory, autocast."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Iterator

import torch

from dirbench.errors import UserError

__all__ = ["autocast", "configure_process", "peak_gpu_mib", "peak_rss_mib", "pick_device", "set_threads"]


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` as named.

    Raises UserError for a name torch does not know, for CUDA on a machine without it (a CPU-only torch
    build, or no GPU visible) and for a GPU index past the visible ones.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"device {name!r}: not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise UserError(f"device {name!r}: CUDA is not available ({why}); use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible (cuda:0 ...)")
    elif device.type != "cpu":
        raise UserError(f"device {name!r}: DIRBench runs on cpu or cuda only")
    return device


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: the given count, else the job's (SLURM / Snakemake / OMP), else all cores."""
    if threads is None:
        for var in ("SLURM_CPUS_PER_TASK", "SNAKEMAKE_THREADS", "OMP_NUM_THREADS"):
            if os.environ.get(var, "").isdigit():
                threads = int(os.environ[var])
                break
    threads = max(1, threads or len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    return threads


def configure_process(seed: int, threads: int | None = None) -> int:
    """The one place where a training process's global state is set: RNG seeds and CPU threads.

    Seeds Python's ``random``, NumPy's global RNG and torch (CPU and CUDA) with ``seed``, and sets torch's
    intra-op threads (:func:`set_threads`). Returns the thread count.
    """
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return set_threads(threads)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def peak_gpu_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated by torch on ``device`` so far, in MiB (0 on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


@contextlib.contextmanager
def autocast(device: torch.device, amp: str) -> Iterator[None]:
    """bf16 / fp16 autocast on ``device`` (``amp="none"``: full precision)."""
    if amp == "none":
        yield
        return
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
