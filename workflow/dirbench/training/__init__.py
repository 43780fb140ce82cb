"""Training with the paper's protocol (Liu, Ruan & Sheng, MIDL 2025, App. A), resumable and observable.

- :mod:`~dirbench.training.step`: one optimisation step, a pure function of model, optimiser and pair;
- :mod:`~dirbench.training.loop`: the :class:`Trainer` (epochs, validation, logging, collapse guard);
- :mod:`~dirbench.training.state`: the position in training and checkpoint I/O;
- :mod:`~dirbench.training.health`: the convergence and collapse rules;
- :func:`train` (here): the entry point, and the one place where process-global settings are made.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dirbench.checkpoint import load_checkpoint
from dirbench.run_record import RunId, RunRecord
from dirbench.runtime import configure_process
from dirbench.train_config import TrainConfig
from dirbench.training.loop import Trainer, TrainingInterrupted
from dirbench.training.step import TrainingError

__all__ = ["Trainer", "TrainingError", "TrainingInterrupted", "train"]

ON_CHANGE = ("refuse", "restart")


def _set_aside(out_dir: Path) -> Path:
    """Move a run's checkpoints and results into ``out_dir/stale-<time>/`` (nothing is deleted)."""
    stale = out_dir / time.strftime("stale-%Y%m%d-%H%M%S")
    stale.mkdir()
    for name in ("last.pt", "best.pt", "metrics.csv", "summary.json"):
        if (out_dir / name).exists():
            (out_dir / name).rename(stale / name)
    return stale


def train(
    cfg: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True, run: RunId | None = None,
    on_change: str = "refuse",
) -> RunRecord:  # fmt: skip
    """Train ``cfg.method`` into ``out_dir``; returns the completed run record (also ``summary.json``).

    With ``resume``, a run with a ``last.pt`` continues from it, also after it finished: a larger
    ``cfg.epochs`` extends it. A ``last.pt`` trained with settings that change the result (see
    :meth:`TrainConfig.result_changes`) or on another dataset is refused with the list of changes
    (``on_change="refuse"``) or set aside into ``stale-<time>/`` before starting anew (``"restart"``).

    This function seeds the RNGs and sets the thread count (:func:`dirbench.runtime.configure_process`);
    the trainer itself changes no process-global state. Raises :class:`TrainingError` on a bad set-up or a
    non-finite loss or gradient (``last.pt`` is left as it was) and :class:`TrainingInterrupted` after
    saving ``last.pt`` on SIGTERM / SIGINT.
    """
    if on_change not in ON_CHANGE:
        raise ValueError(f"on_change must be one of {ON_CHANGE}, got {on_change!r}")
    out_dir = Path(out_dir)
    last = out_dir / "last.pt"
    if last.exists() and not resume:
        raise TrainingError(f"{last} exists: pass --resume to continue that run, or choose a new --out")
    configure_process(cfg.seed, cfg.threads)
    trainer = Trainer(cfg, out_dir, run)
    if resume and last.exists():
        saved = RunRecord.from_checkpoint(load_checkpoint(last), last)
        changes = cfg.result_changes(saved.train)
        if saved.dataset.sha256 != trainer.record.dataset.sha256:
            changes.append(f"dataset: {saved.dataset.path} (sha256 {saved.dataset.sha256[:12]}…) → "
                           f"{trainer.record.dataset.path} (sha256 {trainer.record.dataset.sha256[:12]}…)")  # fmt: skip
        if changes and on_change == "refuse":
            raise TrainingError(
                f"{last} was trained with other settings ({'; '.join(changes)}); use another --out, or pass "
                "--on-change restart to set that run aside and start anew"
            )
        if changes:
            stale = _set_aside(out_dir)
            print(f"dirbench train: {last} was trained with other settings ({'; '.join(changes)}); "
                  f"moved it to {stale}, starting anew", file=sys.stderr)  # fmt: skip
        else:
            trainer.restore(last)
            print(f"dirbench train: resuming {out_dir} from epoch {trainer.state.epoch}, step {trainer.state.step}"
                  f" (of {cfg.epochs} epochs)", file=sys.stderr)  # fmt: skip
    return trainer.run(progress=progress)
