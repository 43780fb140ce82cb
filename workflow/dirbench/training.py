"""The training loop of the paper's protocol, resumable and observable.

Liu, Ruan & Sheng (MIDL 2025), App. A and ``spec/methods-dp.md`` §4:

- loss ``1 − NCC²`` (9³ box window, VFA-style) ``+ λ · diffusion`` (λ = 1) on the final full-resolution
  displacement only;
- non-IC models take two optimiser steps per drawn pair (A→B, then B→A); inverse-consistent models (whose
  output carries ``inverse``) take one step on the symmetric loss
  ``0.5 [NCC(f, m∘Φ12) + NCC(m, f∘Φ21)] + λ · 0.5 [Grad(Φ12) + Grad(Φ21)]``;
- Adam (amsgrad), batch 1; constant lr or cosine warm restarts stepped per update with
  ``epoch + samples / samples_per_epoch``;
- validation every ``val_every`` epochs: mean Dice over the labels (labelled data) or ``1 − NCC`` (LUMIR);
  ``best.pt`` keeps the best.

Outputs in ``RUN_DIR``: ``run.yaml``, ``last.pt`` (atomic, every epoch and on SIGTERM / SIGINT),
``best.pt``, ``metrics.csv`` (one row per epoch), ``summary.json``, TensorBoard events when available.
A run resumed with ``resume=True`` continues exactly where ``last.pt`` left off: on CPU the final weights
are bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

import methods
from dirbench import metrics
from dirbench.checkpoint import load_checkpoint, save_checkpoint
from dirbench.dataset import Dataset, ImageRecord, PairRecord
from dirbench.errors import UserError
from dirbench.io import atomic_path
from dirbench.runtime import autocast, peak_gpu_mib, peak_rss_mib, pick_device, set_threads
from dirbench.sampler import epoch_pairs, training_subset
from dirbench.train_config import TrainConfig
from dirbench.volumes import VolumeCache
from methods.losses import ncc_vfa, registration_loss
from methods.spatial import warp

__all__ = ["TrainingError", "TrainingInterrupted", "train"]

#: Run settings that do not change the result, so a run may resume under different values of them.
RESUMABLE_CHANGES = {"device", "threads", "cache_gb", "tensorboard", "compile", "channels_last"}

METRICS_COLUMNS = [
    "epoch", "loss", "sim", "reg", "val_metric", "val_value", "lr", "epoch_time_s", "steps_per_s",
    "peak_rss_mib", "peak_gpu_mib",
]  # fmt: skip


class TrainingError(UserError):
    """Training cannot go on (non-finite loss or gradient, or a bad set-up); names where it happened."""


class TrainingInterrupted(Exception):
    """SIGTERM / SIGINT arrived; ``last.pt`` holds the exact position to resume from."""


@dataclass
class _State:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed pairs within the current epoch
    updates: int = 0
    samples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    train_time_s: float = 0.0
    # The current epoch's running totals (kept across an interruption, so its row stays complete).
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    epoch_count: int = 0
    epoch_time_s: float = 0.0
    epoch_updates: int = 0


class _SignalFlag:
    """Turns SIGTERM / SIGINT into a flag checked between steps."""

    def __init__(self) -> None:
        self.received: int | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        self.received = signum


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """One training run (see the module docstring); use :func:`train`."""

    def __init__(self, cfg: TrainConfig, out_dir: Path) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.dataset = Dataset.load(cfg.dataset)
        self.shape = self.dataset.shape
        self.device = pick_device(cfg.device)
        self.threads = set_threads(cfg.threads)
        _seed_everything(cfg.seed)
        overrides = {"img_size": self.shape, **cfg.model}
        if tuple(overrides["img_size"]) != self.shape:
            raise TrainingError(
                f"{self.dataset.path}: dataset images are {self.shape} but the model is configured for "
                f"{tuple(overrides['img_size'])}; drop the img_size override or prepare the data at that size"
            )
        self.model = methods.build(cfg.method, **overrides).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, amsgrad=True)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                self.optimizer, T_0=cfg.cosine_t0, T_mult=cfg.cosine_tmult, eta_min=cfg.lr_min
            )
            if cfg.schedule == "cosine"
            else None
        )
        all_train = self.dataset.training
        self.train_images = [all_train[i] for i in training_subset(len(all_train), cfg.train_subset, cfg.seed)]
        if len(self.train_images) < 2:
            raise TrainingError(f"{self.dataset.path}: training needs at least 2 training images")
        self.val_pairs = self._validation_pairs()
        self.val_metric = self._choose_val_metric()
        scale = float(self.dataset.raw.get("intensity_scale", 1.0))
        self.cache = VolumeCache(cfg.cache_gb * 2**30, self.shape, scale)
        self.state = _State()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.flag = _SignalFlag()
        self.writer = self._tensorboard() if cfg.tensorboard else None

    # ------------------------------------------------------------------ set-up helpers

    def _validation_pairs(self) -> list[PairRecord]:
        if self.cfg.val_list not in self.dataset.raw:
            return []
        pairs = self.dataset.pairs(self.cfg.val_list)
        return pairs[: self.cfg.val_max_pairs] if self.cfg.val_max_pairs else pairs

    def _choose_val_metric(self) -> str:
        if self.cfg.val_metric != "auto":
            return self.cfg.val_metric
        labelled = self.dataset.labels and all(p.fixed.label and p.moving.label for p in self.val_pairs)
        return "dice" if labelled else "ncc"

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array))[None, None].to(self.device, dtype=torch.float32)
        return t.contiguous(memory_format=torch.channels_last_3d) if self.cfg.channels_last else t

    def _image(self, record: ImageRecord) -> torch.Tensor:
        return self._tensor(self.cache.get(record.image))

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "method": self.cfg.method,
            "model_config": dict(self.model.config),
            "train_config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "position": vars(self.state),
            "rng": _rng_state(),
            "val_metric": self.val_metric,
        }

    def save_last(self) -> None:
        """``last.pt``: the full state, plus the best weights so far (so ``best.pt`` can be restored)."""
        save_checkpoint(self.out_dir / "last.pt", {**self._checkpoint_state(), "best_model": self.best_weights})

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt["method"] != self.cfg.method:
            raise TrainingError(f"{path}: checkpoint is for method {ckpt['method']!r}, not {self.cfg.method!r}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler and ckpt["scheduler"]:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state = _State(**ckpt["position"])
        self.best_weights = ckpt.get("best_model")
        _set_rng_state(ckpt["rng"])
        best = self.out_dir / "best.pt"
        if self.best_weights is not None and not best.exists():  # e.g. removed by Snakemake after a failure
            save_checkpoint(best, {**self._checkpoint_state(), "model": self.best_weights})

    # ------------------------------------------------------------------ steps

    def _loss(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """Forward and loss for one drawn pair: (loss, sim, reg, inverse_consistent)."""
        with autocast(self.device, self.cfg.amp):
            out = self.forward(moving, fixed)
        loss, sim, reg = registration_loss(moving, fixed, out, self.cfg.reg_weight, self.cfg.ncc_window)
        return loss, sim, reg, out.inverse is not None

    def _update(self, moving: torch.Tensor, fixed: torch.Tensor, where: str) -> tuple[float, float, float, bool]:
        self.optimizer.zero_grad(set_to_none=True)
        loss, sim, reg, ic = self._loss(moving, fixed)
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite loss ({loss.item()}) at {where}; {self._intact()}")
        loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.detach().abs().max() for g in grads]).max()):
            raise TrainingError(f"non-finite gradient at {where}; {self._intact()}")
        self.optimizer.step()
        self.state.updates += 1
        return loss.item(), sim.item(), reg.item(), ic

    def _intact(self) -> str:
        last = self.out_dir / "last.pt"
        return f"the last good checkpoint {last} is intact" if last.exists() else "no checkpoint was written yet"

    def _train_pair(self, m: ImageRecord, f: ImageRecord, epoch: int, step: int) -> list[tuple[float, float, float]]:
        """One drawn pair: one symmetric step (IC) or two steps, A→B then B→A."""
        moving, fixed = self._image(m), self._image(f)
        where = f"epoch {epoch + 1}, step {step + 1}, pair (moving {m.id}, fixed {f.id})"
        loss, sim, reg, ic = self._update(moving, fixed, where)
        results = [(loss, sim, reg)]
        if not ic:
            where = f"epoch {epoch + 1}, step {step + 1}, pair (moving {f.id}, fixed {m.id})"
            results.append(self._update(fixed, moving, where)[:3])
        self.state.samples += 2
        if self.scheduler:
            self.scheduler.step(epoch + (step + 1) / (self.cfg.samples_per_epoch // 2))
        return results

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> float:
        """Mean Dice over the labels (higher is better) or mean ``1 − NCC²`` (lower is better)."""
        self.model.eval()
        values = []
        for pair in self.val_pairs:
            moving, fixed = self._image(pair.moving), self._image(pair.fixed)
            with autocast(self.device, self.cfg.amp):
                disp = self.forward(moving, fixed).disp.float()
            if self.val_metric == "ncc":
                values.append(ncc_vfa(fixed, warp(moving, disp), self.cfg.ncc_window).item())
                continue
            assert pair.fixed.label is not None and pair.moving.label is not None
            moving_seg = self.cache.get(pair.moving.label, "label")
            fixed_seg = self.cache.get(pair.fixed.label, "label")
            warped = metrics.warp_labels(moving_seg, disp[0].cpu().numpy())  # the evaluator's warp
            values.append(float(np.nanmean(metrics.compute_dice(fixed_seg, moving_seg, warped, self.dataset.labels))))
        self.model.train()
        return float(np.mean(values))

    def _better(self, value: float) -> bool:
        best = self.state.best_value
        if best is None:
            return True
        return value > best if self.val_metric == "dice" else value < best

    # ------------------------------------------------------------------ the loop

    def run(self, progress: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        n_pairs = cfg.samples_per_epoch // 2
        total = cfg.epochs * n_pairs
        bar = tqdm(
            total=total, initial=self.state.epoch * n_pairs + self.state.step, disable=not progress,
            desc=cfg.method, unit="pair", dynamic_ncols=True,
        )  # fmt: skip
        self.model.train()
        try:
            with self.flag.installed():
                while self.state.epoch < cfg.epochs:
                    self._run_epoch(n_pairs, bar)
        finally:
            bar.close()
            self.cache.close()
            if self.writer is not None:
                self.writer.close()
        return self._finish()

    def _run_epoch(self, n_pairs: int, bar: Any) -> None:
        cfg, st = self.cfg, self.state
        epoch = st.epoch
        pairs = epoch_pairs(len(self.train_images), epoch, n_pairs, cfg.seed)
        t0, updates0 = time.perf_counter(), st.updates
        sums = np.array(st.epoch_sums)

        def book() -> None:
            """Fold the time and updates since ``t0`` into the epoch's running totals."""
            nonlocal t0, updates0
            now = time.perf_counter()
            st.epoch_sums = sums.tolist()
            st.epoch_time_s += now - t0
            st.train_time_s += now - t0
            st.epoch_updates += st.updates - updates0
            t0, updates0 = now, st.updates

        for step in range(st.step, n_pairs):
            m, f = (self.train_images[i] for i in pairs[step])
            if step + 1 < n_pairs:
                self.cache.prefetch([self.train_images[i].image for i in pairs[step + 1]])
            for result in self._train_pair(m, f, epoch, step):
                sums += result
                st.epoch_count += 1
            st.step = step + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{sums[0] / st.epoch_count:.4f}")
            if self.flag.received is not None:
                book()
                self.save_last()
                raise TrainingInterrupted(f"signal {self.flag.received}: saved {self.out_dir / 'last.pt'}")
        book()
        row = self._epoch_row(sums / max(st.epoch_count, 1), st.epoch_time_s, st.epoch_updates)
        st.epoch, st.step = epoch + 1, 0
        st.epoch_sums, st.epoch_count, st.epoch_time_s, st.epoch_updates = [0.0, 0.0, 0.0], 0, 0.0, 0
        st.history.append(row)
        self._write_metrics()
        if row["val_value"] != "" and self._better(row["val_value"]):
            st.best_value, st.best_epoch = row["val_value"], st.epoch
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            save_checkpoint(self.out_dir / "best.pt", self._checkpoint_state())
        self.save_last()

    def _epoch_row(self, means: np.ndarray, elapsed: float, updates: int) -> dict[str, Any]:
        epoch = self.state.epoch + 1
        validate = self.val_pairs and (epoch % self.cfg.val_every == 0 or epoch == self.cfg.epochs)
        val = self.validate() if validate else ""
        row = {
            "epoch": epoch,
            "loss": float(means[0]),
            "sim": float(means[1]),
            "reg": float(means[2]),
            "val_metric": self.val_metric if validate else "",
            "val_value": val,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": elapsed,
            "steps_per_s": updates / elapsed if elapsed > 0 else math.nan,
            "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": peak_gpu_mib(self.device),
        }
        if self.writer is not None:
            for key in ("loss", "sim", "reg", "lr", "steps_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], epoch)
            if validate:
                self.writer.add_scalar(f"val/{self.val_metric}", val, epoch)
        return row

    def _write_metrics(self) -> None:
        with atomic_path(self.out_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
            writer.writeheader()
            writer.writerows(self.state.history)

    def _finish(self) -> dict[str, Any]:
        st = self.state
        if not (self.out_dir / "best.pt").exists():  # no validation pairs: the final weights are the result
            st.best_epoch = st.epoch
            save_checkpoint(self.out_dir / "best.pt", self._checkpoint_state())
        summary = {
            "method": self.cfg.method,
            "params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "epochs": st.epoch,
            "updates": st.updates,
            "val_metric": self.val_metric,
            "best_value": st.best_value,
            "best_epoch": st.best_epoch,
            "train_time_s": st.train_time_s,
            "steps_per_s": st.updates / st.train_time_s if st.train_time_s > 0 else None,
            "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": peak_gpu_mib(self.device),
            "device": str(self.device),
            "threads": self.threads,
            "train_images": len(self.train_images),
        }
        with atomic_path(self.out_dir / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        return summary


def _changed_settings(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Settings that differ between a checkpoint's run and ``cfg`` and would change the result."""
    current = cfg.to_dict()
    keys = (current.keys() | saved.keys()) - RESUMABLE_CHANGES
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def _set_aside(out_dir: Path) -> Path:
    """Move a stale run's checkpoints into ``out_dir/stale-<time>/`` (nothing is deleted)."""
    stale = out_dir / time.strftime("stale-%Y%m%d-%H%M%S")
    stale.mkdir()
    for name in ("last.pt", "best.pt", "metrics.csv", "summary.json"):
        if (out_dir / name).exists():
            (out_dir / name).rename(stale / name)
    return stale


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.method`` into ``out_dir``; with ``resume``, continue from ``out_dir/last.pt`` if present.

    Returns the summary (also written to ``summary.json``). Raises :class:`TrainingError` on a non-finite
    loss or gradient (``last.pt`` is left as it was) and :class:`TrainingInterrupted` after saving
    ``last.pt`` on SIGTERM / SIGINT.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    if last.exists() and not resume:
        raise TrainingError(f"{last} exists: pass --resume to continue that run, or choose a new --out")
    if resume and last.exists() and _changed_settings(load_checkpoint(last)["train_config"], cfg):
        stale = _set_aside(out_dir)
        print(f"dirbench train: {last} was trained with other settings; moved it to {stale}, starting anew",
              file=sys.stderr)
    trainer = Trainer(cfg, out_dir)
    if resume and last.exists():
        trainer.restore(last)
        print(f"dirbench train: resuming {out_dir} from epoch {trainer.state.epoch}, step {trainer.state.step}",
              file=sys.stderr)
    with atomic_path(out_dir / "run.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return trainer.run(progress=progress)
