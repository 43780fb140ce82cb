"""The training loop of the paper's protocol: epochs, validation, logging, convergence and collapse.

Liu, Ruan & Sheng (MIDL 2025), App. A and ``spec/methods-dp.md`` §4:

- non-IC models take two optimiser steps per drawn pair (A→B, then B→A); inverse-consistent models one
  step on the symmetric loss (:mod:`dirbench.training.step`);
- Adam (amsgrad), batch 1; constant lr or cosine warm restarts stepped per update with
  ``epoch + pairs done / pairs per epoch``;
- validation every ``val_every`` epochs (and after the last): mean Dice over the labels, with the labels
  warped exactly as the evaluator does (:func:`dirbench.metrics.warp_labels`), or ``1 − NCC²`` (LUMIR);
  ``best.pt`` keeps the best.

Every epoch prints one line to stderr (epoch, updates, losses, validation, steps/s, ETA), with or without
the progress bar, so a job log shows progress. After each validation the collapse guard
(:mod:`dirbench.training.health`) may stop the run. The run record (:mod:`dirbench.run_record`) is
completed at the end with the convergence verdict and the run's figures.

Outputs in ``RUN_DIR``: ``last.pt`` (atomic, every epoch and on SIGTERM / SIGINT), ``best.pt``,
``metrics.csv`` (one row per epoch), ``summary.json`` (the run record), TensorBoard events when available.
"""

from __future__ import annotations

import csv
import datetime
import math
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import methods
from dirbench import metrics
from dirbench.checkpoint import load_checkpoint, restore_rng_state
from dirbench.dataset import Dataset, ImageRecord, PairRecord
from dirbench.io import atomic_path
from dirbench.run_record import DatasetIdentity, ParamCounts, Preprocessing, RunId, RunRecord
from dirbench.runtime import autocast, peak_gpu_mib, peak_rss_mib, pick_device
from dirbench.sampler import epoch_pairs, training_subset
from dirbench.train_config import TrainConfig
from dirbench.training import health
from dirbench.training.state import Position, write_checkpoint
from dirbench.training.step import TrainingError, compute_loss, optimisation_step
from dirbench.volumes import VolumeCache
from methods.losses import ncc_vfa
from methods.spatial import warp

__all__ = ["METRICS_COLUMNS", "Trainer", "TrainingInterrupted"]

METRICS_COLUMNS = [
    "epoch", "updates", "loss", "sim", "reg", "val_metric", "val_value", "val_outside", "lr", "epoch_time_s",
    "steps_per_s", "peak_rss_mib", "peak_gpu_mib",
]  # fmt: skip


class TrainingInterrupted(Exception):
    """SIGTERM / SIGINT arrived; ``last.pt`` holds the exact position to resume from."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


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


def build_model(cfg: TrainConfig, shape: tuple[int, int, int], where: str) -> torch.nn.Module:
    """``methods.build(cfg.method, img_size=shape, **cfg.model)``, with set-up mistakes as one-line errors."""
    overrides = {"img_size": list(shape), **cfg.model}
    if tuple(overrides["img_size"]) != shape:
        raise TrainingError(
            f"{where}: dataset images are {shape} but the model is configured for "
            f"{tuple(overrides['img_size'])}; drop the img_size override or prepare the data at that size"
        )
    if cfg.method not in methods.available():
        raise TrainingError(f"unknown method {cfg.method!r}; available: {', '.join(methods.available())}")
    try:
        return methods.build(cfg.method, **overrides)
    except (TypeError, ValueError) as err:
        raise TrainingError(f"method {cfg.method}: bad model override(s) {cfg.model}: {err}") from None


class Trainer:
    """One training run (see the module docstring). Its constructor changes no process-global state.

    Args:
        cfg: the run's settings.
        out_dir: the run folder (created when the run starts).
        run: the run's identity (default: the dataset's name, the method, ``cfg.train_subset``, ``cfg.seed``).
    """

    def __init__(self, cfg: TrainConfig, out_dir: Path, run: RunId | None = None) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.dataset = Dataset.load(cfg.dataset)
        self.shape = self.dataset.shape
        self.device = pick_device(cfg.device)
        self.model = build_model(cfg, self.shape, str(self.dataset.path)).to(self.device)
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
        preprocessing = Preprocessing.of_dataset(self.dataset)
        self.record = RunRecord(
            run=run or RunId(self.dataset.name, cfg.method, cfg.train_subset, cfg.seed),
            train=cfg,
            model=dict(self.model.config),
            params=ParamCounts.of_model(self.model),
            preprocessing=preprocessing,
            dataset=DatasetIdentity.of_dataset(self.dataset),
        )
        self.cache = VolumeCache(cfg.cache_gb * 2**30, self.shape, preprocessing.intensity_scale)
        self.state = Position()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.flag = _SignalFlag()
        self.writer: Any = None
        self.bar: Any = None
        self.started = ""  # wall-clock start of this training session (ISO 8601), set by run()

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

    def log(self, message: str) -> None:
        """One line on stderr (above the progress bar when there is one)."""
        line = f"[{self.record.run.label}] {message}"
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: Path, weights: dict[str, torch.Tensor] | None = None, with_best: bool = False) -> None:
        write_checkpoint(
            path, self.record.to_dict(), self.model.state_dict() if weights is None else weights, self.optimizer,
            self.scheduler, self.state, self.best_weights if with_best else None,
        )  # fmt: skip

    def save_last(self) -> None:
        """``last.pt``: the full state, plus the best weights so far (so ``best.pt`` can be restored)."""
        self.save(self.out_dir / "last.pt", with_best=True)

    def restore(self, path: Path) -> RunRecord:
        """Continue from the checkpoint ``path``; returns its run record."""
        ckpt = load_checkpoint(path, map_location=self.device)
        saved = RunRecord.from_checkpoint(ckpt, path)
        if saved.run.method != self.cfg.method:
            raise TrainingError(f"{path}: checkpoint is for method {saved.run.method!r}, not {self.cfg.method!r}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler and ckpt["scheduler"]:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state = Position(**ckpt["position"])
        self.best_weights = ckpt.get("best_model")
        restore_rng_state(ckpt["rng"])
        self.record.collapse = saved.collapse
        best = self.out_dir / "best.pt"
        if self.best_weights is not None and not best.exists():  # e.g. removed by Snakemake after a failure
            self.save(best, self.best_weights)
        return saved

    # ------------------------------------------------------------------ steps

    def _loss(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """Forward and loss of one pair: (loss, sim, reg, inverse_consistent)."""
        cfg = self.cfg
        return compute_loss(
            self.forward, moving, fixed, reg_weight=cfg.reg_weight, ncc_window=cfg.ncc_window, device=self.device,
            amp=cfg.amp,
        )  # fmt: skip

    def _update(self, moving: torch.Tensor, fixed: torch.Tensor, where: str) -> tuple[float, float, float, bool]:
        cfg = self.cfg
        try:
            result = optimisation_step(
                self.model, self.forward, self.optimizer, moving, fixed, reg_weight=cfg.reg_weight,
                ncc_window=cfg.ncc_window, device=self.device, amp=cfg.amp, where=where,
            )  # fmt: skip
        except TrainingError as err:
            last = self.out_dir / "last.pt"
            kept = f"the last good checkpoint {last} is intact" if last.exists() else "no checkpoint was written yet"
            raise TrainingError(f"{err}; {kept}") from None
        self.state.updates += 1
        return result.loss, result.sim, result.reg, result.inverse_consistent

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

    def _pair_value(self, pair: PairRecord, disp: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor) -> float:
        if self.val_metric == "ncc":
            return ncc_vfa(fixed, warp(moving, disp), self.cfg.ncc_window).item()
        if pair.fixed.label is None or pair.moving.label is None:
            raise TrainingError(f"validation pair ({pair.fixed.id}, {pair.moving.id}) has no labels for Dice")
        moving_seg = self.cache.get(pair.moving.label, "label")
        fixed_seg = self.cache.get(pair.fixed.label, "label")
        field = disp[0].permute(1, 2, 3, 0).cpu().numpy()
        warped = metrics.warp_labels(moving_seg, field)
        return float(np.nanmean(metrics.compute_dice(fixed_seg, moving_seg, warped, self.dataset.labels)))

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """(mean validation value, mean fraction of the fixed grid sampled outside the moving image).

        The value is the mean Dice over the labels (higher is better) or ``1 − NCC²`` (lower is better).
        The zero field's value is recorded once, as ``val_initial``.
        """
        self.model.eval()
        values, initial, outside = [], [], []
        for pair in self.val_pairs:
            moving, fixed = self._image(pair.moving), self._image(pair.fixed)
            with autocast(self.device, self.cfg.amp):
                disp = self.forward(moving, fixed).disp.float()
            values.append(self._pair_value(pair, disp, moving, fixed))
            outside.append(health.outside_fraction(disp))
            if self.state.val_initial is None:
                initial.append(self._pair_value(pair, torch.zeros_like(disp), moving, fixed))
        if initial:
            self.state.val_initial = float(np.mean(initial))
        self.model.train()
        return float(np.mean(values)), float(np.mean(outside))

    def _better(self, value: float) -> bool:
        best = self.state.best_value
        if best is None:
            return True
        return value > best if self.val_metric == "dice" else value < best

    # ------------------------------------------------------------------ the loop

    def run(self, progress: bool = True) -> RunRecord:
        """Train until ``cfg.epochs`` (or a collapse); returns the completed run record."""
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = datetime.datetime.now().astimezone().isoformat()
        n_pairs = cfg.samples_per_epoch // 2
        self.bar = tqdm(
            total=cfg.epochs * n_pairs, initial=self.state.epoch * n_pairs + self.state.step,
            disable=not progress, desc=self.record.run.label, unit="pair", dynamic_ncols=True,
        )  # fmt: skip
        self.writer = self._tensorboard() if cfg.tensorboard else None
        self.model.train()
        try:
            with self.flag.installed():
                while self.state.epoch < cfg.epochs and not self.record.collapsed:
                    self._run_epoch(n_pairs)
        finally:
            self.bar.close()
            self.bar = None
            self.cache.close()
            if self.writer is not None:
                self.writer.close()
        return self._finish()

    def _run_epoch(self, n_pairs: int) -> None:
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
            self.bar.update(1)
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{sums[0] / st.epoch_count:.4f}")
            if self.flag.received is not None:
                book()
                self.save_last()
                signum = self.flag.received
                raise TrainingInterrupted(signum, f"signal {signum}: saved {self.out_dir / 'last.pt'}")
        book()
        row = self._epoch_row(sums / max(st.epoch_count, 1), st.epoch_time_s, st.epoch_updates)
        st.epoch, st.step = epoch + 1, 0
        st.epoch_sums, st.epoch_count, st.epoch_time_s, st.epoch_updates = [0.0, 0.0, 0.0], 0, 0.0, 0
        st.history.append(row)
        self._write_metrics()
        validated = row["val_value"] != ""
        if validated:
            st.validations.append(row["val_value"])
            if self._better(row["val_value"]):
                st.best_value, st.best_epoch = row["val_value"], st.epoch
                self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                self.save(self.out_dir / "best.pt")
        self.log(self._epoch_line(row))
        if cfg.collapse_guard:
            self._guard(row)
        self.save_last()

    def _guard(self, row: dict[str, Any]) -> None:
        """Stop the run, loudly, when :func:`health.collapse_reason` finds the model degenerated."""
        validations = [  # rows from checkpoints written before ``val_outside`` existed count as 0 outside
            (r["val_value"], r.get("val_outside") or 0.0) for r in self.state.history if r["val_value"] != ""
        ]
        reason = health.collapse_reason(
            sim=row["sim"], val_metric=self.val_metric, validations=validations if row["val_value"] != "" else [],
            initial_value=self.state.val_initial,
        )  # fmt: skip
        if reason is None:
            return
        epoch = self.state.epoch
        self.record.collapse = {"epoch": epoch, "reason": reason}
        lr = self.cfg.lr
        advice = f"Training stopped. Try a lower learning rate (now {lr:g}, e.g. --lr {lr / 10:g})."
        for line in ("!" * 100, f"COLLAPSED at epoch {epoch}: {reason}.", advice, "!" * 100):
            self.log(line)

    def _epoch_row(self, means: np.ndarray, elapsed: float, updates: int) -> dict[str, Any]:
        epoch = self.state.epoch + 1
        validate = bool(self.val_pairs) and (epoch % self.cfg.val_every == 0 or epoch == self.cfg.epochs)
        val, outside = self.validate() if validate else ("", "")
        row = {
            "epoch": epoch,
            "updates": self.state.updates,
            "loss": float(means[0]),
            "sim": float(means[1]),
            "reg": float(means[2]),
            "val_metric": self.val_metric if validate else "",
            "val_value": val,
            "val_outside": outside,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": elapsed,
            "steps_per_s": updates / elapsed if elapsed > 0 else math.nan,
            "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": peak_gpu_mib(self.device),
        }
        if self.writer is not None:
            for key in ("loss", "sim", "reg", "lr", "steps_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], self.state.updates)
            if validate:
                self.writer.add_scalar(f"val/{self.val_metric}", val, self.state.updates)
        return row

    def _epoch_line(self, row: dict[str, Any]) -> str:
        """``epoch 3/20 · 96 updates · loss … (sim …, reg …) · val dice … (best … at epoch …) · 3.4 steps/s · ETA``."""
        st, cfg = self.state, self.cfg
        parts = [
            f"epoch {row['epoch']}/{cfg.epochs}",
            f"{row['updates']} updates",
            f"loss {row['loss']:.4f} (sim {row['sim']:.4f}, reg {row['reg']:.4f})",
        ]
        if row["val_value"] != "":
            initial = f"; initial {st.val_initial:.4f}" if st.val_initial is not None else ""
            best = f"best {st.best_value:.4f} at epoch {st.best_epoch}{initial}"
            parts.append(f"val {self.val_metric} {row['val_value']:.4f} ({best})")
        parts.append(f"{row['steps_per_s']:.2f} steps/s")
        done = [r["epoch_time_s"] for r in st.history]
        eta = (cfg.epochs - row["epoch"]) * float(np.mean(done[-5:]))
        parts.append(f"ETA {datetime.timedelta(seconds=round(eta))}")
        return " · ".join(parts)

    def _write_metrics(self) -> None:
        with atomic_path(self.out_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
            writer.writeheader()
            writer.writerows(self.state.history)

    def _finish(self) -> RunRecord:
        st, record = self.state, self.record
        record.status = "collapsed" if record.collapsed else "finished"
        record.converged = health.converged(
            st.validations, self.val_metric == "dice", self.cfg.converge_tol, st.val_initial
        )
        if self.best_weights is None:  # never validated (no validation pairs, or a collapse before the first)
            st.best_epoch = st.epoch
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        record.result = {
            "epochs": st.epoch,
            "updates": st.updates,
            "val_metric": self.val_metric,
            "val_pairs": len(self.val_pairs),
            "val_initial": st.val_initial,
            "best_value": st.best_value,
            "best_epoch": st.best_epoch,
            "train_time_s": st.train_time_s,
            "steps_per_s": st.updates / st.train_time_s if st.train_time_s > 0 else None,
            "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": peak_gpu_mib(self.device),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "train_images": len(self.train_images),
            "session": {"started": self.started, "finished": datetime.datetime.now().astimezone().isoformat()},
        }
        if self.best_weights is not None:
            self.save(self.out_dir / "best.pt", self.best_weights)  # with the completed record
        self.save_last()
        record.write(self.out_dir / "summary.json")
        verdict = {True: "converged", False: "NOT converged", None: "convergence unknown (too few validations)"}
        note = f"COLLAPSED at epoch {record.collapse['epoch']}" if record.collapse else verdict[record.converged]
        best = "not validated" if st.best_value is None else f"best {self.val_metric} {st.best_value:.4f}"
        self.log(f"done: {st.epoch} epochs, {st.updates} updates, {best} (weights of epoch {st.best_epoch}); {note}")
        return record
