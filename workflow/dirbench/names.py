"""Display names of the methods, as Table 1 of Liu, Ruan & Sheng (MIDL 2025) prints them.

A method label in the evaluation CSVs is a registry name (``dp-conv-mf``), ``initial`` (the zero field),
``greedy``, or a registry name trained on a subset of the training images, ``dp-convic-c@10`` (``@``
separates the training-set size).
"""

from __future__ import annotations

import re

__all__ = ["DISPLAY_NAMES", "display_name", "family", "split_method"]

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
    "dp-conv-mf": "(a)DP-Conv-MF",
    "dp-conv-mf-small": "(a)DP-Conv-MF (small)",
    "dp-conv-mf-medium": "(a)DP-Conv-MF (medium)",
    "dp-conv-mf-large": "(a)DP-Conv-MF (large)",
    "dp-conv-mfc": "(a)DP-Conv-MFC",
    "dp-conv-c": "(a)DP-Conv-C",
    "dp-convic-mf": "(b)DP-ConvIC-MF",
    "dp-convic-c": "(b)DP-ConvIC-C",
    "dp-convic-mfc": "(b)DP-ConvIC-MFC (ours)",
    "dp-vfa": "(c)DP-VFA",
}

_SIZE_SUFFIX = re.compile(r"-(s|m|l|small|medium|large)$")


def split_method(label: str) -> tuple[str, int | None]:
    """``"dp-convic-c@10"`` → ``("dp-convic-c", 10)``; ``"vfa"`` → ``("vfa", None)``.

    Raises ValueError when the part after ``@`` is not a positive integer.
    """
    base, sep, size = label.partition("@")
    if not sep:
        return label, None
    if not size.isdigit() or int(size) < 1:
        raise ValueError(
            f"method label {label!r}: the training-set size after '@' must be a positive integer"
        )
    return base, int(size)


def display_name(label: str) -> str:
    """The printed name of a method label; a subset run reads ``"(b)DP-ConvIC-C [10 images]"``.

    Names without an entry in :data:`DISPLAY_NAMES` are printed as given.
    """
    base, size = split_method(label)
    name = DISPLAY_NAMES.get(base, base)
    return name if size is None else f"{name} [{size} images]"


def family(label: str) -> str:
    """The model family of a scaling variant: ``voxelmorph-l`` → ``voxelmorph``, ``dp-conv-mf-small`` →
    ``dp-conv-mf``; other labels are their own family (the ``@N`` suffix is dropped)."""
    return _SIZE_SUFFIX.sub("", split_method(label)[0])
