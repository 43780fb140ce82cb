"""Run configuration of one training run, serialised to ``RUN_DIR/run.yaml``.

Defaults follow the paper's protocol (Liu, Ruan & Sheng, MIDL 2025, App. A; ``spec/methods-dp.md`` §4):
1 − NCC² (9³ box window) + λ·diffusion with λ = 1 on the final field; Adam with amsgrad, batch 1; 100
samples per epoch; constant lr 1e-4 (OASIS) or cosine warm restarts T0 = 100, Tmult = 2 between 1e-3 and
1e-5, stepped per update (LUMIR); seed 42; best checkpoint by validation Dice (labelled data) or by
validation 1 − NCC (LUMIR).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dirbench.errors import UserError

__all__ = ["TrainConfig"]

SCHEDULES = ("constant", "cosine")
AMP_MODES = ("none", "bf16", "fp16")
VAL_METRICS = ("auto", "dice", "ncc")


@dataclass
class TrainConfig:
    """Everything that defines a training run (the method's own architecture lives in ``model``)."""

    method: str
    dataset: str
    model: dict[str, Any] = field(default_factory=dict)  # overrides passed to methods.build
    epochs: int = 200
    samples_per_epoch: int = 100
    lr: float = 1e-4
    schedule: str = "constant"
    lr_min: float = 1e-5
    cosine_t0: int = 100
    cosine_tmult: int = 2
    reg_weight: float = 1.0
    ncc_window: int = 9
    val_every: int = 1
    val_list: str = "validation"
    val_metric: str = "auto"
    val_max_pairs: int | None = None
    train_subset: int | None = None
    seed: int = 42
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    cache_gb: float = 8.0
    tensorboard: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}"),
            (self.val_metric in VAL_METRICS, f"val_metric must be one of {VAL_METRICS}, got {self.val_metric!r}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.samples_per_epoch >= 2, "samples_per_epoch must be >= 2"),
            (self.val_every >= 1, "val_every must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.train_subset is None or self.train_subset >= 2, "train_subset must be >= 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"training config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"training config: unknown key(s) {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> dict[str, Any]:
        """Read a (possibly partial) run YAML as a dict, to be merged with CLI values."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise UserError(f"{path}: cannot read run config: {err}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: run config must be a mapping")
        return data
