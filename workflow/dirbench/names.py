"""Display names of the methods, as Table 1 of Liu, Ruan & Sheng (MIDL 2025) prints them.

A method label in the evaluation CSVs is a registry name (``dp-conv-mf``), ``initial`` (the zero field),
``greedy``, or a registry name trained on a subset of the training images, ``dp-convic-c@10``: the label
of a :class:`dirbench.run_record.RunId`, which alone parses it.
"""

from __future__ import annotations

import re

from dirbench.run_record import RunId

__all__ = ["DISPLAY_NAMES", "display_name", "family"]

#: Registry name → the paper's row label ((a)/(b)/(c) mark the three DP decoder types of Figure A1).
DISPLAY_NAMES: dict[str, str] = {
    "initial": "Initial",
    "greedy": "Greedy",
    "voxelmorph": "VoxelMorph",
    "voxelmorph-s": "VoxelMorph-S",
    "voxelmorph-m": "VoxelMorph-M",
    "voxelmorph-l": "VoxelMorph-L",
    "transmorph": "TransMorph",
    "vfa": "VFA",
    "sitreg": "SITReg (IC)",
    "dp-conv-mf": "(a) DP-Conv-MF",
    "dp-conv-mf-small": "(a) DP-Conv-MF (small)",
    "dp-conv-mf-medium": "(a) DP-Conv-MF (medium)",
    "dp-conv-mf-large": "(a) DP-Conv-MF (large)",
    "dp-conv-mfc": "(a) DP-Conv-MFC",
    "dp-conv-c": "(a) DP-Conv-C",
    "dp-convic-mf": "(b) DP-ConvIC-MF",
    "dp-convic-c": "(b) DP-ConvIC-C",
    "dp-convic-mfc": "(b) DP-ConvIC-MFC (ours)",
    "dp-vfa": "(c) DP-VFA",
}

_SIZE_SUFFIX = re.compile(r"-(s|m|l|small|medium|large)$")


def display_name(label: str) -> str:
    """The printed name of a method label; a subset run reads ``"(b) DP-ConvIC-C [10 images]"``.

    Names without an entry in :data:`DISPLAY_NAMES` are printed as given. ValueError for a bad ``@N``.
    """
    run = RunId.from_label(label)
    name = DISPLAY_NAMES.get(run.method, run.method)
    return name if run.subset is None else f"{name} [{run.subset:,} images]"


def family(label: str) -> str:
    """The model family of a scaling variant: ``voxelmorph-l`` → ``voxelmorph``, ``dp-conv-mf-small`` →
    ``dp-conv-mf``; other labels are their own family (the ``@N`` suffix is dropped)."""
    return _SIZE_SUFFIX.sub("", RunId.from_label(label).method)
