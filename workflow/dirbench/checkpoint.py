"""Self-describing checkpoints: a model can be rebuilt from its checkpoint alone.

A checkpoint holds the run record (:mod:`dirbench.run_record`: the method, its model configuration, the
training settings, the preprocessing), the weights, the optimiser and scheduler states, the position in
training and the RNG states (:mod:`dirbench.training.state`). ``last.pt`` is rewritten atomically every
epoch (and on SIGTERM / SIGINT); ``best.pt`` whenever validation improves, and once more at the end.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import methods
from dirbench.errors import UserError
from dirbench.io import atomic_path

__all__ = ["FORMAT", "encode_rng_state", "load_checkpoint", "rebuild_model", "restore_rng_state", "save_checkpoint"]

FORMAT = "dirbench-checkpoint/1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (with ``format`` added) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely, with an error naming the file when it is missing, not a PyTorch checkpoint,
    corrupt, foreign, or holds objects other than tensors and plain data.

    It is loaded with ``torch.load(weights_only=True)``: only tensors and plain data (dicts, lists, tuples,
    strings, numbers, booleans, None) are unpickled, so a checkpoint someone shares cannot run code when
    it is loaded. Everything DIRBench stores is of that kind; the RNG states, which numpy and ``random``
    give as tuples holding an ndarray, go through :func:`encode_rng_state` / :func:`restore_rng_state`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise UserError(f"{path}: not a PyTorch checkpoint (not a zip archive written by torch.save)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise UserError(
                f"{path}: refused: the checkpoint holds Python objects other than tensors and plain data "
                f"({', '.join(unsafe)}), and loading them could run code"
            ) from None
        raise UserError(f"{path}: unreadable checkpoint (corrupt or truncated?)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
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


def encode_rng_state() -> dict[str, Any]:
    """The process's global random states as data ``torch.load(weights_only=True)`` accepts.

    Returns ``{"torch": ByteTensor, "numpy": {...}, "python": {...}}`` plus ``"cuda"`` (a list of
    ByteTensors, one per GPU) when CUDA is available. numpy's legacy MT19937 state (``np.random.get_state()``:
    name, 624 uint32 keys, position, has_gauss, cached_gaussian) keeps its keys as an int64 tensor;
    Python's ``random.getstate()`` (version, 625 ints, gauss_next) becomes a dict with a list of ints.
    :func:`restore_rng_state` puts it back exactly.
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(encoded: dict[str, Any]) -> None:
    """Set the global random states from :func:`encode_rng_state`'s result (CUDA's only when both the
    state and a GPU are there). The state tensors may have been loaded onto a GPU (``map_location``)."""
    torch.set_rng_state(encoded["torch"].cpu())
    np_state = encoded["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["keys"].cpu().numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = encoded["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss_next"]))
    if "cuda" in encoded and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in encoded["cuda"]])


def _unsafe_globals(path: Path) -> list[str]:
    """The classes / functions a checkpoint's pickle would import, beyond torch's weights-only allow-list
    (read from the pickle's opcodes, nothing is executed); empty when the file cannot be read that far."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError, zipfile.BadZipFile):
        return []
