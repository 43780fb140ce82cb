"""The all-zero LUMIR submission: a smoke test of the submission path (the leaderboard's "Initial" row)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dirbench.io import save_disp
from dirbench.lumir.package import check_folder, write_zip
from dirbench.lumir.pairs import LUMIR_SHAPE, validation_pairs

__all__ = ["zero_submission"]


def zero_submission(
    out: str | Path,
    dataset_json: str | Path | None = None,
    folder: str | None = None,
    expected_shape: tuple[int, int, int] = LUMIR_SHAPE,
) -> dict[str, Any]:
    """The all-zero smoke-test submission (the LUMIR README's "Initial" row: on the validation leaderboard
    Dice 0.5657, TRE 4.3543 mm, NDV 0 %, HD95 4.7876). One zero field is written once and stored for
    every pair. Returns the manifest (also written to ``out.json``)."""
    out = Path(out)
    folder = folder if folder is not None else out.name.removesuffix(".zip")
    check_folder(folder)
    pairs = validation_pairs(dataset_json)
    info = {"format": "LUMIR24 validation submission (all-zero displacement)", "pairs": len(pairs),
            "shape": [*expected_shape, 3], "dtype": "float32", "units": "voxel"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".lumir-zero-") as tmpdir:
        zero = Path(tmpdir) / "zero.nii.gz"
        save_disp(zero, np.zeros((*expected_shape, 3), np.float32), np.eye(4))
        members = ((p.name, zero, {"source": "zeros", "converted": False}) for p in pairs)
        return write_zip(out, folder, members, info)
