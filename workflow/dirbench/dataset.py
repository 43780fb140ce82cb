"""Prepared datasets: one ``dataset.json`` (Learn2Reg schema) per folder, paths relative to the JSON.

The demo data, OASIS and LUMIR all take this one shape::

    {
      "name": "OASIS",
      "tensorImageShape": {"0": [160, 224, 192]},
      "spacing": [1.0, 1.0, 1.0],                    # mm, optional (default 1 mm)
      "labels": {"1": "Left-Cerebral-WM", ...},       # evaluated label ids (empty: no labels)
      "ground_truth": "template_warps",               # optional: the pairs' true displacements are known
      "training": [{"image": "./imagesTr/img0001.nii.gz", "label": "...", "landmarks": "..."}],
      "images":   [{"image": "./imagesTs/img0004.nii.gz", "label": "..."}],   # non-training images
      "validation": [{"fixed": "./...", "moving": "./..."}],                  # named pair lists
      "test": [{"fixed": "./...", "moving": "./..."}]
    }

``label`` and ``landmarks`` are optional per image. A pair's annotations are found through the image
index built from ``training`` and ``images``; a pair entry may also carry ``fixed_label`` /
``moving_label`` / ``fixed_landmarks`` / ``moving_landmarks`` itself. An image's id is the first run
of digits in its file name (``img0004.nii.gz`` → ``0004``, ``LUMIRMRI_3455_0000.nii.gz`` → ``3455``),
which names displacement files ``disp_{fixed}_{moving}.nii.gz`` as LUMIR does.

``ground_truth`` declares that the true displacement of every pair is known, and how
(:data:`GROUND_TRUTH_KINDS`); the evaluation then reports the end-point error ``epe``. The one kind,
``"template_warps"`` (the synthetic demo data, :mod:`dirbench.data.demo`): every image entry also has
``warp`` and ``inverse_warp`` (``[X, Y, Z, 3]`` voxel fields to and from a shared template), and the true
pair displacement is their composition (:func:`dirbench.data.demo.true_pair_disp`). Real data (OASIS,
LUMIR) have no ground truth and omit the key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dirbench.errors import UserError

__all__ = ["GROUND_TRUTH_KINDS", "Dataset", "ImageRecord", "PairRecord", "image_id", "parse_pair_spec"]

_ID = re.compile(r"(\d+)")

#: The values of ``"ground_truth"`` in ``dataset.json`` (see the module docstring).
GROUND_TRUTH_KINDS: tuple[str, ...] = ("template_warps",)


def image_id(path: str | Path) -> str:
    """The id of an image: the first run of digits in its file name (e.g. ``0004``, ``3455``)."""
    name = Path(path).name
    match = _ID.search(name)
    if match is None:
        raise UserError(f"{path}: cannot derive an image id (no digits in the file name)")
    return match.group(1)


@dataclass(frozen=True)
class ImageRecord:
    """One image and its optional annotations (absolute paths)."""

    id: str
    image: Path
    label: Path | None = None
    landmarks: Path | None = None


@dataclass(frozen=True)
class PairRecord:
    """A registration pair: the moving image is pulled onto the fixed grid."""

    fixed: ImageRecord
    moving: ImageRecord

    @property
    def disp_name(self) -> str:
        """``disp_{fixed}_{moving}.nii.gz``, fixed id first (LUMIR naming)."""
        return f"disp_{self.fixed.id}_{self.moving.id}.nii.gz"

    @property
    def inverse_name(self) -> str:
        """``inv_{fixed}_{moving}.nii.gz``: the inverse field (on the moving grid) of an inverse-consistent model."""
        return f"inv_{self.fixed.id}_{self.moving.id}.nii.gz"


@dataclass
class Dataset:
    """A parsed ``dataset.json`` (see the module docstring for the schema)."""

    path: Path
    raw: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Read and check ``path`` (a ``dataset.json``)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: dataset.json not found")
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{path}: not valid JSON: {err}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("training", []), list):
            raise UserError(f"{path}: expected an object with a 'training' list")
        return cls(path=path.resolve(), raw=raw)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return str(self.raw.get("name", self.root.name))

    @property
    def shape(self) -> tuple[int, int, int]:
        """The image shape ``(X, Y, Z)`` from ``tensorImageShape``."""
        try:
            shape = self.raw["tensorImageShape"]["0"]
        except (KeyError, TypeError):
            raise UserError(f"{self.path}: missing tensorImageShape {{'0': [X, Y, Z]}}") from None
        return tuple(int(n) for n in shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm (default 1 mm isotropic, as OASIS and LUMIR)."""
        return tuple(float(s) for s in self.raw.get("spacing", (1.0, 1.0, 1.0)))  # type: ignore[return-value]

    @property
    def ground_truth(self) -> str | None:
        """How the pairs' true displacements are known (:data:`GROUND_TRUTH_KINDS`), or None (real data)."""
        kind = self.raw.get("ground_truth")
        if kind is not None and kind not in GROUND_TRUTH_KINDS:
            expected = ", ".join(GROUND_TRUTH_KINDS)
            raise UserError(f"{self.path}: unknown ground_truth {kind!r}; expected one of {expected} (or no key)")
        return kind

    @property
    def labels(self) -> list[int]:
        """Evaluated label ids, sorted (empty when the dataset has no segmentations)."""
        return sorted(int(k) for k in self.raw.get("labels", {}))

    def resolve(self, rel: str | None) -> Path | None:
        """A path from the JSON, made absolute against the JSON's folder."""
        return None if rel is None else (self.root / rel).resolve()

    def _record(self, entry: dict[str, Any]) -> ImageRecord:
        image = self.resolve(entry["image"])
        assert image is not None
        label, landmarks = self.resolve(entry.get("label")), self.resolve(entry.get("landmarks"))
        return ImageRecord(image_id(image), image, label, landmarks)

    @property
    def training(self) -> list[ImageRecord]:
        """The training images, in file order."""
        return [self._record(e) for e in self.raw.get("training", [])]

    def index(self) -> dict[Path, ImageRecord]:
        """Every known image (training and ``images``) by absolute path."""
        records = [self._record(e) for e in [*self.raw.get("training", []), *self.raw.get("images", [])]]
        return {r.image: r for r in records}

    def pair_lists(self) -> list[str]:
        """Names of the pair lists (``validation``, ``test``, ...)."""
        def is_pair_list(value: Any) -> bool:
            return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "fixed" in value[0]

        return [k for k, v in self.raw.items() if is_pair_list(v)]

    def pairs(self, name: str) -> list[PairRecord]:
        """The pair list ``name`` with annotations resolved."""
        if name not in self.raw:
            raise UserError(f"{self.path}: no pair list {name!r}; available: {', '.join(self.pair_lists()) or 'none'}")
        index = self.index()
        out = []
        for entry in self.raw[name]:
            sides = []
            for side in ("fixed", "moving"):
                image = self.resolve(entry[side])
                assert image is not None
                known = index.get(image, ImageRecord(image_id(image), image))
                label = self.resolve(entry.get(f"{side}_label")) or known.label
                landmarks = self.resolve(entry.get(f"{side}_landmarks")) or known.landmarks
                sides.append(ImageRecord(known.id, image, label, landmarks))
            out.append(PairRecord(*sides))
        return out


def parse_pair_spec(spec: str) -> tuple[Dataset, str]:
    """``path/to/dataset.json:test`` → (dataset, ``"test"``)."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path:
        raise UserError(f"{spec!r}: expected DATASET_JSON:PAIR_LIST, e.g. data/demo/dataset.json:test")
    return Dataset.load(path), name
