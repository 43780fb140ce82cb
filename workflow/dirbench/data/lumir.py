"""LUMIR-2024 (Learn2Reg 2024, large-scale unsupervised brain MRI registration) → a prepared folder.

Source: ``LUMIR_L2R24_TrainVal.zip`` (~52 GB, Google Drive id ``1PTHAX9hZX7HBXXUGVvI1ar1LUf4aVbq9``)
and the official ``LUMIR_dataset.json`` (a copy ships in ``dirbench/resources/lumir/``). Licence:
CC BY 4.0 (OpenBHB, Dufumier et al. 2022; AFIDs, Taha et al. 2023; OASIS, Marcus et al. 2007).
``spec/evaluation-and-data.md`` §7.1.

Steps:

1. The zip is either the user's (``archive=``) or fetched with ``gdown`` (an optional dependency,
   imported only here). Google Drive often refuses large files ("quota exceeded"); the error then
   explains the manual drop-in: download the zip in a browser and pass ``--archive PATH``.
2. No checksum is published, so the first run records the sha256 of the zip and of the json in
   ``OUT/checksums.json``; every later run compares against that record (and against an explicit
   ``sha256=`` pin) and raises UserError naming both sums on a mismatch. To avoid re-hashing 52 GB on
   every run, the recorded sum is reused while the zip's path, size and mtime are unchanged
   (``verify=True`` forces a re-hash).
3. Only the files the official json names (``imagesTr/`` training, ``imagesVal/`` validation) are
   extracted, to ``OUT/imagesTr`` and ``OUT/imagesVal``, each atomically; an interrupted extraction
   resumes (files already there with the member's size are kept; with ``verify`` their CRC-32 is
   checked). Output paths come from the validated json entries, never from zip member names.
4. **Intensities are kept as released** (the files are copied byte for byte; values in [0, 255]).
   ``dataset.json`` records ``"intensity_scale": 1/255``: the training/inference loader multiplies by
   it, as the LUMIR baselines divide by 255. Rescaling at preparation would rewrite 3,424 volumes
   and double the disk use for no gain.
5. ``dataset.json``: ``training`` = the official training list (3,384 images), ``images`` = the 40
   validation images, ``validation`` = the 38 official (fixed, moving) pairs; ``labels`` is empty
   (the organisers keep the validation labels). ``manifest.json`` (size + CRC-32 per image) is written
   last; with it present and intact a re-run does nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
from tqdm import tqdm

from dirbench.data.download import (
    Prepared,
    check_digest,
    file_crc32,
    file_digest,
    prepared_manifest,
    read_json,
    write_json,
    write_manifest,
)
from dirbench.errors import UserError
from dirbench.io import atomic_path

__all__ = [
    "CHECKSUMS_NAME",
    "DATASET_JSON",
    "INTENSITY_SCALE",
    "LUMIR_SHAPE",
    "LUMIR_ZIP_ID",
    "LUMIR_ZIP_NAME",
    "extract_images",
    "fetch_with_gdown",
    "prepare_lumir",
    "read_official_json",
]

LUMIR_ZIP_ID = "1PTHAX9hZX7HBXXUGVvI1ar1LUf4aVbq9"
LUMIR_ZIP_NAME = "LUMIR_L2R24_TrainVal.zip"
LUMIR_SHAPE = (160, 224, 192)
DATASET_JSON = Path(__file__).resolve().parents[1] / "resources" / "lumir" / "LUMIR_dataset.json"
INTENSITY_SCALE = 1.0 / 255.0
CHECKSUMS_NAME = "checksums.json"
_REL = re.compile(r"\./(imagesTr|imagesVal)/[A-Za-z0-9][A-Za-z0-9_.-]*\.nii\.gz")
_CHUNK = 1 << 22


def _listing(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def read_official_json(path: str | Path) -> tuple[dict[str, Any], list[str], list[tuple[str, str]]]:
    """Parse an official-format ``LUMIR_dataset.json``: (raw json, training paths, (fixed, moving) pairs).

    Paths must look like ``./imagesTr/NAME.nii.gz`` or ``./imagesVal/NAME.nii.gz``; ``numTraining`` /
    ``numValidation``, when present, must match the list lengths.
    """
    path = Path(path)
    raw = read_json(path)
    try:
        training = [str(e["image"]) for e in raw["training"]]
        pairs = [(str(e["fixed"]), str(e["moving"])) for e in raw["validation"]]
    except (KeyError, TypeError):
        raise UserError(
            f"{path}: expected 'training': [{{'image': ...}}] and "
            "'validation': [{'fixed': ..., 'moving': ...}]"
        ) from None
    bad = [p for p in training + [p for pair in pairs for p in pair] if not _REL.fullmatch(p)]
    if bad:
        raise UserError(
            f"{path}: unexpected image path(s) {_listing(bad)} (expected ./imagesTr|imagesVal/NAME.nii.gz)"
        )
    for key, items in (("numTraining", training), ("numValidation", pairs)):
        if key in raw and raw[key] != len(items):
            raise UserError(f"{path}: {key} is {raw[key]} but the list has {len(items)} entries")
    return raw, training, pairs


def fetch_with_gdown(dest: Path, file_id: str = LUMIR_ZIP_ID, progress: bool = True) -> Path:
    """Download a Google Drive file with ``gdown`` into ``dest`` (via ``dest.part``, resumable).

    Raises UserError with the manual instructions if gdown is missing or the download fails (quota).
    """
    manual = (
        f"download https://drive.google.com/file/d/{file_id}/view ({LUMIR_ZIP_NAME}, ~52 GB) yourself "
        f"(e.g. in a browser) and pass it with --archive PATH, or put it at {dest}"
    )
    try:
        import gdown
    except ImportError:
        raise UserError(
            f"the LUMIR zip comes from Google Drive and gdown is not installed (pip install gdown); "
            f"or {manual}"
        ) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        result = gdown.download(id=file_id, output=str(part), quiet=not progress, resume=True)
    except Exception as err:  # gdown raises its own (quota: FileURLRetrievalError) and requests' errors
        raise UserError(
            f"Google Drive download of {file_id} failed ({type(err).__name__}: {err}); {manual}"
        ) from None
    if not result or not part.is_file():
        raise UserError(f"Google Drive download of {file_id} failed (quota exceeded?); {manual}")
    if not zipfile.is_zipfile(part):
        part.unlink()
        raise UserError(
            f"Google Drive returned something that is not a zip for {file_id} (quota page?); {manual}"
        )
    os.replace(part, dest)
    return dest


def _archive_sha256(path: Path, record: dict[str, Any] | None, force: bool, progress: bool) -> str:
    """sha256 of the zip; the recorded one is reused while its path, size and mtime are unchanged."""
    st = path.stat()
    key = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if record and not force and all(record.get(k) == v for k, v in key.items()) and "sha256" in record:
        return str(record["sha256"])
    return file_digest(path, "sha256", progress=progress)


def _compare(path: Path, expected: str | None, actual: str, what: str) -> None:
    if expected is not None and expected != actual:
        raise UserError(f"{path}: sha256 mismatch: expected {expected} ({what}), got {actual}")


def extract_images(
    archive: Path, out: Path, rels: list[str], *, verify: bool = False, progress: bool = True
) -> dict[str, dict[str, int]]:
    """Extract the files ``rels`` (``./imagesTr/NAME`` …) from ``archive`` to ``out/imagesTr/NAME`` ….

    A member matches by its last two path components (any top folder, e.g. ``LUMIR_L2R24_TrainVal/``).
    Files already present with the member's size (and, with ``verify``, its CRC-32) are kept.
    Returns manifest entries {relative path: {size, crc32}}.
    """
    wanted = {rel.removeprefix("./") for rel in rels}
    try:
        with zipfile.ZipFile(archive) as zf:
            found: dict[str, zipfile.ZipInfo] = {}
            for info in zf.infolist():
                key = "/".join(info.filename.split("/")[-2:])
                if key in wanted and not info.is_dir():
                    if key in found:
                        raise UserError(f"{archive}: {key} appears more than once")
                    found[key] = info
            missing = sorted(wanted - set(found))
            if missing:
                raise UserError(f"{archive}: missing image(s) named in the dataset json: {_listing(missing)}")
            for key, info in tqdm(
                sorted(found.items()), desc="LUMIR extract", unit="file", disable=not progress
            ):
                dest = out / key
                if (
                    dest.is_file()
                    and dest.stat().st_size == info.file_size
                    and (not verify or file_crc32(dest) == info.CRC)
                ):
                    continue
                with zf.open(info) as src, atomic_path(dest) as tmp, open(tmp, "wb") as fh:
                    shutil.copyfileobj(src, fh, _CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise UserError(
            f"{archive}: cannot read the zip archive (truncated or corrupt download?): {err}"
        ) from None
    return {key: {"size": info.file_size, "crc32": info.CRC} for key, info in sorted(found.items())}


def _check_headers(out: Path, rels: list[str], shape: tuple[int, int, int], progress: bool) -> list[float]:
    """Check every image's header shape; return the (common) voxel spacing in mm."""
    spacings = set()
    for rel in tqdm(rels, desc="LUMIR headers", unit="file", disable=not progress):
        path = out / rel
        try:
            header = nib.load(str(path)).header
        except Exception as err:  # nibabel raises several types for corrupt headers
            raise UserError(f"{path}: not a readable NIfTI file: {err}") from None
        got = tuple(int(n) for n in header.get_data_shape())
        if got[:3] != tuple(shape) or any(n != 1 for n in got[3:]):
            raise UserError(f"{path}: shape {got}, expected {tuple(shape)}")
        spacings.add(tuple(round(float(z), 6) for z in header.get_zooms()[:3]))
    if len(spacings) != 1:
        raise UserError(f"{out}: images have different voxel spacings {sorted(spacings)}")
    return list(spacings.pop())


def prepare_lumir(
    out: str | Path,
    *,
    archive: str | Path | None = None,
    dataset_json: str | Path = DATASET_JSON,
    sha256: str | None = None,
    expected_shape: tuple[int, int, int] = LUMIR_SHAPE,
    verify: bool = False,
    progress: bool = True,
) -> Prepared:
    """Prepare LUMIR-2024 in ``out`` (module docstring).

    Args:
        out: the dataset folder (created).
        archive: the train+val zip; None uses ``out/downloads/LUMIR_L2R24_TrainVal.zip``, fetched with
            gdown when absent.
        dataset_json: the official-format json (default: the copy shipped with dirbench).
        sha256: pin for the zip's sha256 (else the first run records it in ``out/checksums.json``).
        expected_shape: image shape (160, 224, 192 for the release).
        verify: re-hash the zip and every prepared file even when unchanged.
        progress: tqdm bars on stderr.
    """
    out = Path(out)
    pin = check_digest(sha256, "sha256") if sha256 else None
    json_path = Path(dataset_json)
    official, training, pairs = read_official_json(json_path)
    checks_path = out / CHECKSUMS_NAME
    record = read_json(checks_path) if checks_path.is_file() else {}
    rec_zip, rec_json = record.get("archive"), record.get("dataset_json")
    json_sum = file_digest(json_path)
    _compare(json_path, rec_json and rec_json.get("sha256"), json_sum, f"recorded in {checks_path}")

    downloaded = archive is None
    zip_path = out / "downloads" / LUMIR_ZIP_NAME if archive is None else Path(archive)
    if not downloaded and not zip_path.is_file():
        raise UserError(f"{zip_path}: archive not found")
    manifest = prepared_manifest(out, full=verify)
    if manifest is not None:  # done; still check the zip if it is at hand (cheap while unchanged)
        if zip_path.is_file():
            actual = _archive_sha256(zip_path, rec_zip, verify, progress)
            _compare(zip_path, rec_zip and rec_zip.get("sha256"), actual, f"recorded in {checks_path}")
        else:
            actual = (rec_zip or {}).get("sha256")
        if actual is not None:
            _compare(zip_path, pin, actual, "--sha256")
        return Prepared(out / "dataset.json", created=False, n_images=int(manifest.get("n_images", 0)))

    if downloaded and not zip_path.is_file():
        fetch_with_gdown(zip_path, progress=progress)
    actual = _archive_sha256(zip_path, rec_zip, verify, progress)
    _compare(zip_path, pin, actual, "--sha256")
    _compare(zip_path, rec_zip and rec_zip.get("sha256"), actual, f"recorded in {checks_path}")
    st = zip_path.stat()
    write_json(
        checks_path,
        {
            "archive": {
                "name": zip_path.name,
                "path": str(zip_path.resolve()),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "sha256": actual,
            },
            "dataset_json": {"name": json_path.name, "sha256": json_sum},
        },
    )

    val_images = sorted({p for pair in pairs for p in pair} - set(training))
    rels = training + val_images
    files: dict[str, dict[str, Any]] = dict(
        extract_images(zip_path, out, rels, verify=verify, progress=progress)
    )
    spacing = _check_headers(out, [r.removeprefix("./") for r in rels], expected_shape, progress)
    dataset = {
        "name": "LUMIR",
        **{k: official[k] for k in ("description", "license", "reference", "modality") if k in official},
        "tensorImageShape": {"0": list(expected_shape)},
        "spacing": spacing,
        "labels": {},
        "intensity_scale": INTENSITY_SCALE,
        "source": {
            "drive_id": LUMIR_ZIP_ID if downloaded else None,
            "archive": zip_path.name,
            "sha256": actual,
            "dataset_json": json_path.name,
            "dataset_json_sha256": json_sum,
        },
        "training": [{"image": rel} for rel in training],
        "images": [{"image": rel} for rel in val_images],
        "validation": [{"fixed": f, "moving": m} for f, m in pairs],
    }
    write_json(out / "dataset.json", dataset)
    files["dataset.json"] = {
        "size": (out / "dataset.json").stat().st_size,
        "sha256": file_digest(out / "dataset.json"),
    }
    write_manifest(out, files, dataset="LUMIR", source=dataset["source"], n_images=len(rels))
    return Prepared(out / "dataset.json", created=True, n_images=len(rels))
