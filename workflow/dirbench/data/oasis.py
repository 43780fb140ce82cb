"""neurite-OASIS → a prepared ``dataset.json`` folder with the split of Liu, Ruan & Sheng (MIDL 2025).

Source: the neurite-oasis v1.0 release (Hoopes, Hoffmann, Fischl, Guttag & Dalca, HyperMorph 2021)
of 414 OASIS-1 subjects (Marcus et al., J. Cogn. Neurosci. 2007), one tar of 6.6 GB with md5
``081392a8150ff99ab7a64a9ded377835``. Use is governed by the OASIS data use agreement.

Steps (``spec/evaluation-and-data.md`` §7.2, ``spec/methods-dp.md`` §4):

1. Download the tar into ``OUT/downloads`` (resumable, md5-verified; :func:`dirbench.data.download.download`),
   or take a local tar (``archive=``), verified against the same md5 unless ``md5=None``.
2. Stream the tar once and extract only ``*/aligned_norm.nii.gz``, ``*/aligned_seg35.nii.gz``,
   ``subjects.txt`` and ``seg35_labels.txt`` into a staging folder. Member names are checked (no
   absolute paths, no ``..``, regular files only); the output paths are built from checked components.
3. Subject → id: the 1-based rank of the subject in sorted ``subjects.txt`` (``0001`` … ``0414``), the
   Learn2Reg-2021 numbering the paper's ``imgNNNN``/``segNNNN`` files use.
4. Reorient LIA → RAS with :func:`dirbench.io.reorient` (for the neurite affine this is the paper's
   transpose (0, 2, 1), flip axis 0, flip axis 2): 160×192×224 → 160×224×192. Write
   ``images/imgNNNN.nii.gz`` (float32, intensities as released, in [0, 1]) and ``labels/segNNNN.nii.gz``
   (labels 0..35) with the RAS affine, each file atomically.
5. ``dataset.json``: ``training`` = the 300 ids of ``list_train.txt`` (image + label); ``images`` = the
   30 validation + 84 test ids; pair lists ``validation`` (``pair_val.txt``), ``test``
   (``pair_test_200.txt``), ``test_100``, ``test_020``, each entry ``{"fixed", "moving"}`` in the file's
   "(fixed, moving)" order; labels 1..35 named from ``seg35_labels.txt``.
6. ``manifest.json`` (sizes + sha256 of every output) is written last; with it present and intact a
   re-run does nothing. The staging folder is removed; the tar stays in ``OUT/downloads``.

Shape, split folder and md5 are parameters so that a tiny synthetic archive goes through this same code.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import tarfile
import urllib.parse
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.orientations import aff2axcodes
from tqdm import tqdm

from dirbench.data.download import (
    Prepared,
    check_digest,
    download,
    file_digest,
    prepared_manifest,
    verify_file,
    write_json,
    write_manifest,
)
from dirbench.errors import UserError
from dirbench.io import atomic_path, load_affine, load_image, load_labels, reorient, save_image, save_labels

__all__ = [
    "OASIS_MD5",
    "OASIS_SHAPE",
    "OASIS_URL",
    "PAIR_LISTS",
    "SPLIT_DIR",
    "OasisSplit",
    "extract_archive",
    "prepare_oasis",
    "read_label_names",
    "read_split",
    "read_subjects",
]

OASIS_URL = "https://surfer.nmr.mgh.harvard.edu/ftp/data/neurite/data/neurite-oasis.v1.0.tar"
OASIS_MD5 = "081392a8150ff99ab7a64a9ded377835"
OASIS_SHAPE = (160, 224, 192)  # after LIA → RAS
SPLIT_DIR = Path(__file__).resolve().parents[1] / "resources" / "oasis_split"
# dataset.json pair list → the paper's split file.
PAIR_LISTS = {
    "validation": "pair_val.txt",
    "test": "pair_test_200.txt",
    "test_100": "pair_test_100.txt",
    "test_020": "pair_test_020.txt",
}
N_LABELS = 35
IMAGE_FILE, SEG_FILE = "aligned_norm.nii.gz", "aligned_seg35.nii.gz"
SUBJECTS_FILE, LUT_FILE = "subjects.txt", "seg35_labels.txt"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_CHUNK = 1 << 22


def _listing(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class OasisSplit:
    """The paper's split: image ids (``"0001"`` …) and ordered (fixed, moving) pair lists."""

    train: list[str]
    val: list[str]
    test: list[str]
    pairs: dict[str, list[tuple[str, str]]]
    sha256: str  # fingerprint of the split files

    @property
    def n_subjects(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise UserError(f"{path}: split file not found")
    out = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((lineno, line))
    return out


def read_split(folder: str | Path = SPLIT_DIR) -> OasisSplit:
    """Read ``list_{train,val,test}.txt`` and the ``pair_*.txt`` files of :data:`PAIR_LISTS`.

    The three lists must be disjoint and cover ids 1..N exactly; pairs must name ids of the lists.
    """
    folder = Path(folder)
    lists: dict[str, list[str]] = {}
    digest = hashlib.sha256()
    for part in ("train", "val", "test"):
        path = folder / f"list_{part}.txt"
        ids = []
        for lineno, line in _lines(path):
            if not line.isdigit():
                raise UserError(f"{path}:{lineno}: expected an image id like 0001, got {line!r}")
            ids.append(f"{int(line):04d}")
        lists[part] = ids
        digest.update(f"{path.name}\0{' '.join(ids)}\n".encode())
    every = lists["train"] + lists["val"] + lists["test"]
    expected = [f"{i:04d}" for i in range(1, len(every) + 1)]
    if sorted(every) != expected:
        dup = sorted({i for i in every if every.count(i) > 1})
        gaps = sorted(set(expected) - set(every))
        raise UserError(
            f"{folder}: list_train/val/test must cover ids 0001..{len(every):04d} once each"
            f" (repeated: {_listing(dup) or 'none'}; missing: {_listing(gaps) or 'none'})"
        )
    known = set(every)
    pairs: dict[str, list[tuple[str, str]]] = {}
    for key, fname in PAIR_LISTS.items():
        path = folder / fname
        plist = []
        for lineno, line in _lines(path):
            match = _PAIR.fullmatch(line)
            if match is None:
                raise UserError(f"{path}:{lineno}: expected '(fixed, moving)', got {line!r}")
            pair = (f"{int(match.group(1)):04d}", f"{int(match.group(2)):04d}")
            if not set(pair) <= known:
                raise UserError(
                    f"{path}:{lineno}: id(s) {', '.join(sorted(set(pair) - known))} not in the split"
                )
            plist.append(pair)
        if not plist:
            raise UserError(f"{path}: no pairs")
        pairs[key] = plist
        digest.update(f"{fname}\0{plist}\n".encode())
    return OasisSplit(lists["train"], lists["val"], lists["test"], pairs, digest.hexdigest())


# --------------------------------------------------------------------------- archive


def _target(archive: Path, name: str) -> tuple[str, ...] | None:
    """Staging path components for a member we extract (``(subject, file)`` or ``(file,)``), else None."""
    parts = name.split("/")
    while len(parts) > 1 and parts[0] == ".":
        parts = parts[1:]
    if parts[-1] not in (IMAGE_FILE, SEG_FILE, SUBJECTS_FILE, LUT_FILE):
        return None
    depth = 2 if parts[-1] in (IMAGE_FILE, SEG_FILE) else 1
    keep = parts[-depth:]
    unsafe = name.startswith("/") or ".." in parts or "" in parts or len(keep) < depth
    if unsafe or not all(_SAFE_NAME.fullmatch(p) for p in keep):
        raise UserError(f"{archive}: unsafe or unexpected member name {name!r}; refusing to extract")
    return tuple(keep)


def extract_archive(archive: str | Path, staging: str | Path) -> None:
    """Stream ``archive`` (tar, optionally compressed) and extract only the files this preparer needs.

    Writes ``staging/SUBJECT/aligned_{norm,seg35}.nii.gz``, ``staging/subjects.txt`` and
    ``staging/seg35_labels.txt`` (if present), each atomically. A truncated or corrupt archive, an
    unsafe member name, a non-regular member or a duplicate member raises UserError.
    """
    archive, staging = Path(archive), Path(staging)
    if not archive.is_file():
        raise UserError(f"{archive}: archive not found")
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                keep = _target(archive, member.name)
                if keep is None:
                    continue
                if not member.isfile():
                    raise UserError(f"{archive}: member {member.name!r} is not a regular file")
                dest = staging.joinpath(*keep)
                if dest.exists():
                    raise UserError(f"{archive}: {'/'.join(keep)} appears more than once")
                src = tar.extractfile(member)
                assert src is not None  # regular files always have data
                with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
                    shutil.copyfileobj(src, fh, _CHUNK)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise UserError(
            f"{archive}: cannot read the tar archive (truncated or corrupt download?): {err}"
        ) from None


def read_subjects(path: str | Path) -> list[str]:
    """Subject folder names from ``subjects.txt``, sorted (rank k ↔ image id ``k:04d``, 1-based)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: not found (the archive has no {SUBJECTS_FILE}; is it the neurite-oasis tar?)"
        )
    subjects = [s.strip() for s in path.read_text().splitlines() if s.strip()]
    bad = [s for s in subjects if not _SAFE_NAME.fullmatch(s)]
    if bad:
        raise UserError(f"{path}: invalid subject name(s): {_listing(bad)}")
    if len(set(subjects)) != len(subjects):
        raise UserError(f"{path}: repeated subject names")
    return sorted(subjects)


def read_label_names(path: str | Path | None, n_labels: int = N_LABELS) -> dict[str, str]:
    """Names of labels 1..n_labels from a FreeSurfer colour table (``id name r g b a``); else ``label_N``."""
    names = {str(i): f"label_{i}" for i in range(1, n_labels + 1)}
    if path is None or not Path(path).is_file():
        return names
    path = Path(path)
    for lineno, line in _lines(path):
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit():
            raise UserError(f"{path}:{lineno}: expected 'id name r g b a', got {line!r}")
        if str(int(fields[0])) in names:
            names[str(int(fields[0]))] = fields[1]
    return names


# --------------------------------------------------------------------------- conversion


def _convert(
    src: Path, ident: str, out: Path, expected_shape: tuple[int, int, int]
) -> tuple[list[str], tuple[float, ...]]:
    """Reorient one subject LIA → RAS and write ``images/img{ident}`` / ``labels/seg{ident}``.

    Returns the written relative paths and the RAS voxel spacing (mm).
    """
    img_path, seg_path = src / IMAGE_FILE, src / SEG_FILE
    image, affine = load_image(img_path), load_affine(img_path)
    labels, seg_affine = load_labels(seg_path), load_affine(seg_path)
    if labels.shape != image.shape or not np.allclose(affine, seg_affine, atol=1e-4):
        raise UserError(
            f"{seg_path}: grid (shape {labels.shape}) differs from {img_path} (shape {image.shape})"
        )
    codes = "".join(aff2axcodes(affine))
    if codes != "LIA":
        raise UserError(f"{img_path}: orientation {codes}, expected LIA (the neurite-oasis release)")
    image_ras, ras_affine = reorient(image, affine)
    labels_ras, _ = reorient(labels, affine)
    if image_ras.shape != tuple(expected_shape):
        raise UserError(
            f"{img_path}: shape {image.shape} is {image_ras.shape} after LIA→RAS; "
            f"expected {tuple(expected_shape)}"
        )
    rel_img, rel_seg = f"images/img{ident}.nii.gz", f"labels/seg{ident}.nii.gz"
    save_image(out / rel_img, image_ras, ras_affine)
    save_labels(out / rel_seg, labels_ras, ras_affine)
    spacing = tuple(round(float(s), 6) for s in np.linalg.norm(ras_affine[:3, :3], axis=0))
    return [rel_img, rel_seg], spacing


def _entry(ident: str) -> dict[str, str]:
    return {"image": f"./images/img{ident}.nii.gz", "label": f"./labels/seg{ident}.nii.gz"}


def _pair(fixed: str, moving: str) -> dict[str, str]:
    return {"fixed": f"./images/img{fixed}.nii.gz", "moving": f"./images/img{moving}.nii.gz"}


def prepare_oasis(
    out: str | Path,
    *,
    archive: str | Path | None = None,
    url: str = OASIS_URL,
    md5: str | None = OASIS_MD5,
    split_dir: str | Path = SPLIT_DIR,
    expected_shape: tuple[int, int, int] = OASIS_SHAPE,
    verify: bool = False,
    progress: bool = True,
) -> Prepared:
    """Download (or take ``archive``), extract, reorient and write ``out/dataset.json`` (module docstring).

    Args:
        out: the dataset folder (created).
        archive: a local neurite-oasis tar; None downloads ``url`` into ``out/downloads``.
        url: where to download from.
        md5: expected md5 of the tar (download or ``archive``); None skips the check.
        split_dir: folder with the split files (default: the paper's split shipped with dirbench).
        expected_shape: image shape after LIA → RAS (160, 224, 192 for the release).
        verify: on an already prepared folder, re-hash every file against the manifest (else sizes only).
        progress: tqdm bars on stderr.
    """
    out = Path(out)
    md5 = check_digest(md5, "md5") if md5 else None
    split = read_split(split_dir)
    manifest = prepared_manifest(out, full=verify)
    if manifest is not None:
        done_md5, done_split = manifest.get("source", {}).get("md5"), manifest.get("split_sha256")
        if md5 and done_md5 and md5 != done_md5:
            raise UserError(
                f"{out}: already prepared from an archive with md5 {done_md5}, not {md5}; "
                f"use another --out or delete {out / 'manifest.json'} to prepare again"
            )
        if done_split != split.sha256:
            raise UserError(
                f"{out}: already prepared with a different split than {split_dir}; "
                f"use another --out or delete {out / 'manifest.json'} to prepare again"
            )
        return Prepared(out / "dataset.json", created=False, n_images=int(manifest.get("n_images", 0)))

    downloaded = archive is None
    if archive is None:
        name = Path(urllib.parse.urlsplit(url).path).name or "neurite-oasis.tar"
        archive = download(url, out / "downloads" / name, md5=md5, progress=progress)
    else:
        archive = Path(archive)
        if not archive.is_file():
            raise UserError(f"{archive}: archive not found")
        verify_file(archive, md5=md5, progress=progress)

    staging = out / "downloads" / "extract"
    shutil.rmtree(staging, ignore_errors=True)
    extract_archive(archive, staging)
    subjects = read_subjects(staging / SUBJECTS_FILE)
    if len(subjects) != split.n_subjects:
        raise UserError(
            f"{archive}: {SUBJECTS_FILE} lists {len(subjects)} subjects, but the split in {split_dir} "
            f"covers ids 0001..{split.n_subjects:04d}"
        )
    missing = [
        f"{s}/{f}" for s in subjects for f in (IMAGE_FILE, SEG_FILE) if not (staging / s / f).is_file()
    ]
    if missing:
        raise UserError(f"{archive}: missing subject file(s): {_listing(missing)}")

    ids = {f"{rank:04d}": subject for rank, subject in enumerate(subjects, 1)}
    written: list[str] = []
    spacings = set()
    for ident, subject in tqdm(ids.items(), desc="OASIS LIA→RAS", unit="subject", disable=not progress):
        files, spacing = _convert(staging / subject, ident, out, expected_shape)
        written += files
        spacings.add(spacing)
    if len(spacings) != 1:
        raise UserError(f"{archive}: subjects have different voxel spacings {sorted(spacings)}")

    dataset = {
        "name": "OASIS",
        "description": (
            "neurite-oasis v1.0 (OASIS-1): aligned_norm / aligned_seg35 reoriented LIA->RAS, "
            "ids = rank in sorted subjects.txt, split of Liu, Ruan & Sheng (MIDL 2025)"
        ),
        "license": "OASIS data use agreement, https://www.oasis-brains.org/#access",
        "reference": (
            "Marcus et al., Open Access Series of Imaging Studies (OASIS), J. Cogn. Neurosci. 19(9), 2007; "
            "Hoopes et al., HyperMorph, IPMI 2021, arXiv:2101.01035 (neurite-oasis release)"
        ),
        "tensorImageShape": {"0": list(expected_shape)},
        "spacing": list(spacings.pop()),
        "reorientation": "LIA->RAS: transpose (0, 2, 1), flip axis 0, flip axis 2",
        "labels": read_label_names(staging / LUT_FILE),
        "subjects": ids,
        "source": {"url": url if downloaded else None, "archive": archive.name, "md5": md5},
        "split": {"folder": Path(split_dir).name, "sha256": split.sha256},
        "training": [_entry(i) for i in split.train],
        "images": [_entry(i) for i in sorted(split.val + split.test)],
        **{key: [_pair(f, m) for f, m in plist] for key, plist in split.pairs.items()},
    }
    write_json(out / "dataset.json", dataset)
    written.append("dataset.json")
    files = {rel: {"size": (out / rel).stat().st_size, "sha256": file_digest(out / rel)} for rel in written}
    shutil.rmtree(staging)
    write_manifest(
        out, files, dataset="OASIS", source=dataset["source"], split_sha256=split.sha256, n_images=len(ids)
    )
    return Prepared(out / "dataset.json", created=True, n_images=len(ids))
