"""The LUMIR validation pairs: the bundled official files, pair records and their file names."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from dirbench.dataset import Dataset, image_id
from dirbench.errors import UserError

__all__ = ["LUMIR_SHAPE", "LumirPair", "config_pairs", "resource_path", "validation_pairs"]

LUMIR_SHAPE: tuple[int, int, int] = (160, 224, 192)
"""The LUMIR image grid ``(X, Y, Z)`` (1 mm, identity affine)."""


def resource_path(name: str) -> Path:
    """A bundled official LUMIR file (``LUMIR_dataset.json``, the two ``*_evaluation_config.json``)."""
    return Path(str(resources.files("dirbench") / "resources" / "lumir" / name))


@dataclass(frozen=True)
class LumirPair:
    """One validation pair: ids (``"3455"``), modality codes (``"0000"``) and the JSON's relative paths."""

    fixed: str
    moving: str
    fixed_modality: str
    moving_modality: str
    fixed_image: str
    moving_image: str

    @property
    def name(self) -> str:
        """The README file name ``disp_{fixed}_{moving}.nii.gz``."""
        return f"disp_{self.fixed}_{self.moving}.nii.gz"

    @property
    def long_name(self) -> str:
        """The long form ``disp_{fixed}_{fmod}_{moving}_{mmod}.nii.gz``."""
        return f"disp_{self.fixed}_{self.fixed_modality}_{self.moving}_{self.moving_modality}.nii.gz"

    @property
    def case(self) -> str:
        """The evaluator's case key ``{fixed}_{fmod}<--{moving}_{mmod}``."""
        return f"{self.fixed}_{self.fixed_modality}<--{self.moving}_{self.moving_modality}"


def _modality(rel: str) -> str:
    """The modality code of an image name: the digits after the id (``LUMIRMRI_3455_0000`` → ``0000``)."""
    digits = re.findall(r"\d+", Path(rel).name)
    return digits[1] if len(digits) > 1 else "0000"


def _pair(entry: dict[str, Any], where: Path) -> LumirPair:
    try:
        fixed, moving = str(entry["fixed"]), str(entry["moving"])
    except (KeyError, TypeError):
        raise UserError(f"{where}: a pair entry lacks 'fixed'/'moving': {entry!r}") from None
    return LumirPair(image_id(fixed), image_id(moving), _modality(fixed), _modality(moving), fixed, moving)


def validation_pairs(dataset_json: str | Path | None = None) -> list[LumirPair]:
    """The ``validation`` pairs of a LUMIR ``dataset.json`` (default: the bundled official one, 38 pairs).

    ``path/dataset.json:LIST`` takes the pair list ``LIST`` instead (e.g. the demo data's ``test`` pairs,
    for a dry run of the submission path on the demo).
    """
    spec = str(dataset_json) if dataset_json is not None else str(resource_path("LUMIR_dataset.json"))
    head, sep, tail = spec.rpartition(":")
    path, list_name = (Path(head), tail) if sep and head.endswith(".json") else (Path(spec), "validation")
    entries = Dataset.load(path).raw.get(list_name)
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: no {list_name!r} pair list")
    pairs = [_pair(e, path) for e in entries]
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: the validation list repeats a pair")
    return pairs


def config_pairs(config: str) -> list[LumirPair]:
    """The ``eval_pairs`` of a bundled evaluation config (``"Segmentation"``: 29, ``"Landmark"``: 9)."""
    path = resource_path(f"LUMIR_VAL_{config}_evaluation_config.json")
    return [_pair(e, path) for e in json.loads(path.read_text())["eval_pairs"]]
