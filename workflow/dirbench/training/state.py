"""Where a training run stands, and its checkpoint I/O.

A training checkpoint holds the :class:`~dirbench.run_record.RunRecord` (``record``), the weights
(``model``), the optimiser and scheduler states, the :class:`Position` (``position``), the RNG states
(``rng``, from :func:`dirbench.checkpoint.encode_rng_state`: tensors and plain data, so the checkpoint
loads with ``weights_only=True``) and, in ``last.pt``, the best weights so far (``best_model``), so that a
run resumes exactly where it stopped and ``best.pt`` can be restored if it was removed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dirbench.checkpoint import encode_rng_state, save_checkpoint

__all__ = ["Position", "write_checkpoint"]


@dataclass
class Position:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed pairs within the current epoch
    updates: int = 0
    samples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics.csv row per epoch
    validations: list[float] = field(default_factory=list)  # every validation value, in order
    best_value: float | None = None
    best_epoch: int | None = None
    val_initial: float | None = None  # the zero field's validation value
    train_time_s: float = 0.0
    # The current epoch's running totals (kept across an interruption, so its row stays complete).
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    epoch_count: int = 0
    epoch_time_s: float = 0.0
    epoch_updates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_checkpoint(
    path: Path, record: dict[str, Any], model: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
    scheduler: Any, position: Position, best_model: dict[str, torch.Tensor] | None = None,
) -> None:  # fmt: skip
    """Write a training checkpoint atomically (see the module docstring)."""
    state = {
        "record": record,
        "model": model,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler else None,
        "position": position.to_dict(),
        "rng": encode_rng_state(),
    }
    if best_model is not None:
        state["best_model"] = best_model
    save_checkpoint(path, state)
