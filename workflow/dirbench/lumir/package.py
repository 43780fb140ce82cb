"""Packaging a LUMIR validation submission: one canonical float32 field per pair in a reproducible zip + manifest."""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from dirbench.errors import UserError
from dirbench.io import atomic_path, load_disp, save_disp
from dirbench.lumir.pairs import LUMIR_SHAPE, LumirPair, validation_pairs

__all__ = ["check_folder", "package_submission", "write_zip"]

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same fields give the same zip bytes



def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_folder(folder: str) -> None:
    if not folder or folder in {".", ".."} or "/" in folder or "\\" in folder:
        raise UserError(f"--folder {folder!r}: need a plain folder name (no slashes)")


def write_zip(out: Path, folder: str, members: Iterable[tuple[str, Path, dict[str, Any]]],
               info: dict[str, Any]) -> dict[str, Any]:
    """Write ``out`` (ZIP_STORED members ``folder/name``) and ``out.json`` (the manifest), atomically.

    ``members`` yields ``(name, file, record)``; each file is copied byte for byte and its sha256 added
    to ``record``. The members are consumed lazily, so a generator may create and delete temporaries.
    """
    out = Path(out)
    records = []
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, path, record in members:
                zinfo = zipfile.ZipInfo(f"{folder}/{name}", date_time=_ZIP_DATE)
                zinfo.external_attr = 0o644 << 16
                zinfo.file_size = path.stat().st_size
                digest = hashlib.sha256()
                with path.open("rb") as src, zf.open(zinfo, "w") as dst:
                    for block in iter(lambda src=src: src.read(1 << 20), b""):
                        digest.update(block)
                        dst.write(block)
                records.append({"name": f"{folder}/{name}", "bytes": zinfo.file_size,
                                "sha256": digest.hexdigest(), **record})
        manifest = {
            **info,
            "zip": out.name,
            "zip_bytes": tmp.stat().st_size,
            "zip_sha256": _sha256(tmp),
            "folder": folder,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "members": records,
        }
        manifest_path = out.with_name(out.name + ".json")
        with atomic_path(manifest_path) as mtmp:
            mtmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _is_canonical(path: Path, shape: tuple[int, ...]) -> bool:
    """Already float32 ``[X, Y, Z, 3]``, unscaled, identity affine: copied into the zip as is."""
    img = nib.load(str(path))
    return (
        img.get_data_dtype() == np.dtype("<f4")
        and tuple(img.shape) == (*shape, 3)
        and img.header.get_slope_inter() == (None, None)
        and np.allclose(img.affine, np.eye(4))
    )


def _find_disp(disp_dir: Path, pair: LumirPair) -> Path | None:
    for name in (pair.name, pair.long_name):
        if (disp_dir / name).is_file():
            return disp_dir / name
    return None


def package_submission(
    disp_dir: str | Path,
    out: str | Path,
    dataset_json: str | Path | None = None,
    folder: str | None = None,
    expected_shape: tuple[int, int, int] = LUMIR_SHAPE,
) -> dict[str, Any]:
    """Pack ``disp_dir/disp_{fixed}_{moving}.nii.gz`` for every validation pair into ``out`` (a zip).

    The zip holds one top folder (``folder``, default ``out``'s stem) with exactly one float32
    ``[*expected_shape, 3]`` voxel-unit field per pair, named in the README's short form. Inputs may be
    ``[3, X, Y, Z]``, float64, or carry another affine: those are rewritten as float32 ``[X, Y, Z, 3]``
    with the identity affine; canonical files are copied unchanged. Non-finite values, a wrong shape or
    a missing pair raise :class:`UserError` before anything is written. Writes ``out`` and the manifest
    ``out.json`` (sha256 per member and of the zip) atomically; returns the manifest.
    """
    disp_dir, out = Path(disp_dir), Path(out)
    folder = folder if folder is not None else out.name.removesuffix(".zip")
    check_folder(folder)
    if not disp_dir.is_dir():
        raise UserError(f"{disp_dir}: displacement folder not found")
    pairs = validation_pairs(dataset_json)
    found = {p.name: _find_disp(disp_dir, p) for p in pairs}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise UserError(f"{disp_dir}: missing {len(missing)} of {len(pairs)} displacement files: "
                        + ", ".join(missing))

    def members(tmpdir: Path) -> Iterator[tuple[str, Path, dict[str, Any]]]:
        for pair in pairs:
            src = found[pair.name]
            assert src is not None
            disp = load_disp(src, shape=expected_shape)  # checks shape and finiteness, gives [X,Y,Z,3] f32
            record = {"source": str(src.resolve()), "max_abs_vox": float(np.abs(disp).max(initial=0.0))}
            if _is_canonical(src, expected_shape):
                yield pair.name, src, {**record, "converted": False}
                continue
            tmp = tmpdir / pair.name
            save_disp(tmp, disp, np.eye(4))
            del disp
            yield pair.name, tmp, {**record, "converted": True}
            tmp.unlink()

    info = {"format": "LUMIR24 validation submission", "pairs": len(pairs),
            "shape": [*expected_shape, 3], "dtype": "float32", "units": "voxel"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".lumir-package-") as tmpdir:
        return write_zip(out, folder, members(Path(tmpdir)), info)
