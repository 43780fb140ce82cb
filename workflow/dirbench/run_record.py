"""The record of one training run: every fact about a run, kept in one place.

A :class:`RunRecord` is written when training starts and completed when it ends. It is stored in every
checkpoint (``state["record"]``) and is the content of the run folder's ``summary.json``. Everything
downstream reads a run's facts from it and nowhere else:

- inference takes the intensity scale, the grid and the orientation from :class:`Preprocessing` (never
  from the training ``dataset.json``, which may be on another machine);
- tables and figures take parameter counts from :class:`ParamCounts` (never by building a model);
- the rules, tables, figures and display names identify a run by its :class:`RunId`
  (``dataset / method / subset``, label ``method`` or ``method@N``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dirbench import __version__
from dirbench.dataset import Dataset
from dirbench.errors import UserError
from dirbench.io import atomic_path
from dirbench.train_config import TrainConfig
from methods.config import Config, ConfigError

__all__ = ["SUBSET_ALL", "DatasetIdentity", "ParamCounts", "Preprocessing", "RunId", "RunRecord"]

#: The subset token of a run on every training image.
SUBSET_ALL = "all"


@dataclass(frozen=True)
class RunId(Config):
    """Which run: a method trained on a dataset (or on its first ``subset`` training images) with a seed.

    ``label`` is the method column of the evaluation CSVs: ``method``, or ``method@N`` for a subset.
    ``initial`` (the zero field) and ``greedy`` are labels too, without a training run.
    """

    dataset: str
    method: str
    subset: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if "@" in self.method or "/" in self.method:
            raise ValueError(f"method name {self.method!r} may not contain '@' or '/'")
        if self.subset is not None and self.subset < 2:
            raise ValueError(f"subset {self.subset}: a run needs at least 2 training images")

    @property
    def label(self) -> str:
        return self.method if self.subset is None else f"{self.method}@{self.subset}"

    @property
    def subset_token(self) -> str:
        """The run folder's last part: ``all`` or the number of training images."""
        return SUBSET_ALL if self.subset is None else str(self.subset)

    @property
    def path(self) -> str:
        """``dataset/method/subset``: where the run's files live under ``runs/``, ``disp/`` and ``eval/``."""
        return f"{self.dataset}/{self.method}/{self.subset_token}"

    @classmethod
    def from_label(cls, label: str, dataset: str = "", seed: int = 42) -> RunId:
        """``"dp-convic-c@10"`` → ``RunId(dataset, "dp-convic-c", 10)``; ValueError for a bad ``@N``."""
        method, sep, size = label.partition("@")
        if sep and (not size.isdigit() or int(size) < 2):
            raise ValueError(f"method label {label!r}: the training-set size after '@' must be an integer >= 2")
        return cls(dataset, method, int(size) if sep else None, seed)

    @classmethod
    def from_tokens(cls, dataset: str, method: str, subset: str, seed: int = 42) -> RunId:
        """From path parts / Snakemake wildcards (``subset`` is ``all`` or a number)."""
        if subset != SUBSET_ALL and not subset.isdigit():
            raise ValueError(f"subset {subset!r}: expected {SUBSET_ALL!r} or a number of training images")
        return cls(dataset, method, None if subset == SUBSET_ALL else int(subset), seed)


@dataclass(frozen=True)
class ParamCounts(Config):
    """Trainable parameters: the total, and the shared encoder / the rest for models with an ``encoder``."""

    total: int
    encoder: int | None = None
    decoder: int | None = None

    @classmethod
    def of_model(cls, model: torch.nn.Module) -> ParamCounts:
        def count(module: torch.nn.Module) -> int:
            return sum(p.numel() for p in module.parameters() if p.requires_grad)

        total = count(model)
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, torch.nn.Module):
            return cls(total)
        enc = count(encoder)
        return cls(total, enc, total - enc)


@dataclass(frozen=True)
class Preprocessing(Config):
    """What a model expects of its input: the training data's grid and intensities.

    Attributes:
        intensity_scale: images are multiplied by it before the network (LUMIR: 1/255, else 1).
        shape: ``(X, Y, Z)`` voxels of the training grid.
        spacing: voxel size in mm of the training grid.
        orientation: axis codes of the training grid (``RAS``: array axis 0 → Right, …).
        modality: the training images' modality as the dataset names it (``T1w``, ``MR``).
    """

    intensity_scale: float
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    orientation: str = "RAS"
    modality: str = "unknown"

    @classmethod
    def of_dataset(cls, dataset: Dataset) -> Preprocessing:
        modality = dataset.raw.get("modality", {})
        return cls(
            intensity_scale=float(dataset.raw.get("intensity_scale", 1.0)),
            shape=dataset.shape,
            spacing=dataset.spacing,
            modality=str(modality.get("0", "unknown")) if isinstance(modality, dict) else str(modality),
        )


@dataclass(frozen=True)
class DatasetIdentity(Config):
    """The training dataset: its name, the sha256 of its ``dataset.json``, and where it was."""

    name: str
    sha256: str
    path: str

    @classmethod
    def of_dataset(cls, dataset: Dataset) -> DatasetIdentity:
        digest = hashlib.sha256(dataset.path.read_bytes()).hexdigest()
        return cls(dataset.name, digest, str(dataset.path))


@dataclass
class RunRecord:
    """Every fact about one training run (see the module docstring).

    Attributes:
        run: which run.
        train: the fully resolved training settings.
        model: the model's constructor arguments (``methods.build(run.method, **model)`` rebuilds it).
        params: trainable parameter counts.
        preprocessing: what the model expects of its input.
        dataset: the training dataset's identity.
        version: the DIRBench version that trained it.
        status: ``running``, ``finished``, ``collapsed`` (stopped by the collapse guard) or ``interrupted``.
        converged: whether the validation curve plateaued (None: too few validations to tell).
        collapse: ``{"epoch": E, "reason": "..."}`` when the collapse guard fired, else None.
        result: figures of the finished run (epochs, updates, best validation value and epoch, times, memory,
            threads, and the wall-clock ``session`` {started, finished} of the last training session).
    """

    run: RunId
    train: TrainConfig
    model: dict[str, Any]
    params: ParamCounts
    preprocessing: Preprocessing
    dataset: DatasetIdentity
    version: str = __version__
    status: str = "running"
    converged: bool | None = None
    collapse: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def collapsed(self) -> bool:
        return self.collapse is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.to_dict(),
            "label": self.run.label,
            "train": self.train.to_dict(),
            "model": self.model,
            "params": self.params.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "dataset": self.dataset.to_dict(),
            "version": self.version,
            "status": self.status,
            "converged": self.converged,
            "collapsed": self.collapsed,
            "collapse": self.collapse,
            "result": self.result,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "run record") -> RunRecord:
        """Inverse of :meth:`to_dict` (derived keys ``label`` and ``collapsed`` are ignored)."""
        try:
            return cls(
                run=RunId.from_dict(data["run"], f"{where}: run"),
                train=TrainConfig.from_dict(data["train"], f"{where}: train"),
                model=dict(data["model"]),
                params=ParamCounts.from_dict(data["params"], f"{where}: params"),
                preprocessing=Preprocessing.from_dict(data["preprocessing"], f"{where}: preprocessing"),
                dataset=DatasetIdentity.from_dict(data["dataset"], f"{where}: dataset"),
                version=str(data["version"]),
                status=str(data["status"]),
                converged=data["converged"],
                collapse=data["collapse"],
                result=dict(data["result"]),
            )
        except (KeyError, TypeError, ConfigError) as err:
            raise UserError(f"{where}: not a complete DIRBench run record ({err})") from None

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], path: str | Path) -> RunRecord:
        """The record of a loaded checkpoint; a checkpoint without one is refused."""
        if "record" not in state:
            raise UserError(
                f"{path}: checkpoint has no run record (written by an older DIRBench?); retrain it with this version"
            )
        return cls.from_dict(state["record"], where=str(path))

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        """Read a run folder's ``summary.json``."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{path}: not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: not a run record (expected a JSON object)")
        return cls.from_dict(data, where=str(path))

    def write(self, path: str | Path) -> None:
        """Write ``summary.json`` atomically."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
