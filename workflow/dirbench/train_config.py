"""Settings of one training run: the single source of their keys, types, defaults and help texts.

Defaults follow the paper's protocol (Liu, Ruan & Sheng, MIDL 2025, App. A; ``spec/methods-dp.md`` §4):
1 − NCC² (9³ box window) + λ·diffusion with λ = 1 on the final field; Adam with amsgrad, batch 1; 100
samples per epoch; constant lr 1e-4 (OASIS) or cosine warm restarts T0 = 100, Tmult = 2 between 1e-3 and
1e-5, stepped per update (LUMIR); seed 42; best checkpoint by validation Dice (labelled data) or by
validation 1 − NCC (LUMIR).

The same fields give the ``dirbench train`` flags (:meth:`methods.config.Config.add_arguments`), the
``train`` section of the workflow's config schema, and the DAG-time check of every run's merged settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from methods.config import Config, setting

__all__ = ["RESUMABLE_CHANGES", "TrainConfig"]

SCHEDULES = ("constant", "cosine")
AMP_MODES = ("none", "bf16", "fp16")
VAL_METRICS = ("auto", "dice", "ncc")

#: Settings that do not change the optimisation trajectory, so a run may resume under other values of
#: them (``epochs``: a longer run continues a shorter one exactly, the schedule being per update;
#: ``dataset``: its path may change, its content is compared by hash in the run record).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "dataset", "device", "threads", "cache_gb", "tensorboard", "compile", "channels_last", "converge_tol"}
)


@dataclass
class TrainConfig(Config):
    """Everything that defines a training run (the method's own architecture lives in ``model``)."""

    method: str = setting(help="registry name of the method, e.g. dp-conv-mf")
    dataset: str = setting(help="the prepared dataset.json")
    model: dict[str, Any] = setting({}, 'model overrides passed to methods.build, e.g. {"window_size": [2, 2, 2]}')
    epochs: int = setting(200, "epochs of `samples_per_epoch` samples; raising it continues a finished run")
    samples_per_epoch: int = setting(100, "images drawn per epoch (a drawn pair counts 2)")
    lr: float = setting(1e-4, "learning rate (the start of a cosine schedule)")
    schedule: str = setting("constant", "learning-rate schedule", SCHEDULES)
    lr_min: float = setting(1e-5, "cosine: the lowest learning rate")
    cosine_t0: int = setting(100, "cosine: epochs of the first warm-restart period")
    cosine_tmult: int = setting(2, "cosine: growth factor of each restart period")
    reg_weight: float = setting(1.0, "weight λ of the diffusion regulariser")
    ncc_window: int = setting(9, "side of the local NCC window in voxels")
    val_every: int = setting(1, "validate every N epochs (and after the last)")
    val_list: str = setting("validation", "the dataset's pair list used for validation")
    val_metric: str = setting("auto", "model selection: dice (labelled data), ncc (1 − NCC²), or auto", VAL_METRICS)
    val_max_pairs: int | None = setting(None, "use at most this many validation pairs (default: all)")
    train_subset: int | None = setting(None, "train on the first N images of the seeded training permutation")
    seed: int = setting(42, "seed of the pair sampler and of the weights' initialisation")
    converge_tol: float = setting(
        0.005, "converged when the best validation value improved by less than this over the last quarter"
    )
    collapse_guard: bool = setting(True, "stop a run whose model has degenerated (see README 'Convergence')")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    amp: str = setting("none", "mixed precision", AMP_MODES)
    channels_last: bool = setting(False, "channels_last_3d memory format")
    compile: bool = setting(False, "torch.compile the model")
    threads: int | None = setting(None, "CPU threads (default: the job's share: SLURM / Snakemake / OMP)")
    cache_gb: float = setting(8.0, "GiB of decoded volumes kept in memory")
    tensorboard: bool = setting(True, "write TensorBoard events when tensorboard is installed")

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.samples_per_epoch >= 2, "samples_per_epoch must be >= 2"),
            (self.val_every >= 1, "val_every must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.lr_min >= 0, "lr_min must be >= 0"),
            (self.cosine_t0 >= 1 and self.cosine_tmult >= 1, "cosine_t0 and cosine_tmult must be >= 1"),
            (self.reg_weight >= 0, "reg_weight must be >= 0"),
            (self.ncc_window >= 1 and self.ncc_window % 2 == 1, "ncc_window must be odd and >= 1"),
            (self.val_max_pairs is None or self.val_max_pairs >= 1, "val_max_pairs must be >= 1"),
            (self.train_subset is None or self.train_subset >= 2, "train_subset must be >= 2"),
            (self.converge_tol >= 0, "converge_tol must be >= 0"),
            (self.cache_gb >= 0, "cache_gb must be >= 0"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def result_changes(self, other: TrainConfig) -> list[str]:
        """``key: old → new`` for every setting that differs from ``other`` and changes the result."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{k}: {theirs.get(k)!r} → {mine.get(k)!r}"
            for k in mine
            if k not in RESUMABLE_CHANGES and mine.get(k) != theirs.get(k)
        ]
