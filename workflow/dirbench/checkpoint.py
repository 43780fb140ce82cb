"""Self-describing checkpoints: a model can be rebuilt from its checkpoint alone.

A checkpoint holds the run record (:mod:`dirbench.run_record`: the method, its model configuration, the
training settings, the preprocessing), the weights, the optimiser and scheduler states, the position in
training and the RNG states (:mod:`dirbench.training.state`). ``last.pt`` is rewritten atomically every
epoch (and on SIGTERM / SIGINT); ``best.pt`` whenever validation improves, and once more at the end.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

import methods
from dirbench.errors import UserError
from dirbench.io import atomic_path

__all__ = ["FORMAT", "load_checkpoint", "rebuild_model", "save_checkpoint"]

FORMAT = "dirbench-checkpoint/1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (with ``format`` added) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint, with an error naming the file when it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: unreadable checkpoint (corrupt or truncated?): {err}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a DIRBench checkpoint (expected format {FORMAT})")
    return state


def rebuild_model(state: dict[str, Any], path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained model of checkpoint ``state`` (read from ``path``): its run record's method and model
    configuration (``methods.build(method, **model)``) with its weights."""
    from dirbench.run_record import RunRecord

    record = RunRecord.from_checkpoint(state, path)
    model = methods.build(record.run.method, **record.model)
    model.load_state_dict(state["model"])
    return model.to(device).eval()
