"""LUMIR-2024 validation submissions: packaging, a validator, the zero submission, local evaluation.

The LUMIR brain-MRI task of Learn2Reg 2024 (Chen et al., https://github.com/JHU-MedImage-Reg/LUMIR_L2R)
scores a zip of 38 displacement fields on grand-challenge. Facts used here (spec §5, §6, §8):

- one file per validation pair of ``LUMIR_dataset.json``, named ``disp_{fixed}_{moving}.nii.gz`` (fixed id
  first, e.g. ``disp_3455_3454.nii.gz``); the long form ``disp_3455_0000_3454_0000.nii.gz`` is accepted by
  the organisers (LUMIR_L2R issue #2), although the evaluator's file check as published (evaluation.py
  @ b4c8c49) only looks for the short name when both modalities are ``0000``: the validator accepts the
  long form with a warning and the packager always writes the short one; only ``.nii.gz`` is read (issue
  #2); one missing file aborts the evaluation;
- each field ``[160, 224, 192, 3]`` (or ``[3, 160, 224, 192]``, which the evaluator transposes), voxel
  units on the fixed grid, pull-back ``warped(x) = moving(x + u(x))``, float32; the header is ignored;
- the README layout is ``folder.zip -> folder/disp_*.nii.gz`` (one top folder);
- the evaluator runs two configs: segmentation (29 pairs: NDV, DSC, HD95 over 133 labels incl. 0) and
  landmarks (9 pairs: NDV, TRE); per metric it reports ``mean``, ``std`` (ddof 0) and the 0.3 quantile
  ("30") of the case values over the cases that have that metric.

Zip members are streamed one at a time (gzip decompressed in chunks), so validating a 3 GB submission
never holds a whole field and evaluating it holds one at a time. :func:`evaluate_submission` computes
these metrics locally through :mod:`dirbench.metrics` on whatever annotations the user has.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from dirbench import metrics
from dirbench.dataset import Dataset, image_id
from dirbench.errors import UserError
from dirbench.io import atomic_path, load_disp, load_image, load_labels, save_disp

__all__ = [
    "DSC",
    "HD95",
    "LUMIR_SHAPE",
    "METRICS",
    "NDV",
    "TRE",
    "LumirPair",
    "MemberData",
    "MemberError",
    "Problem",
    "ValidationReport",
    "aggregate",
    "config_pairs",
    "evaluate_submission",
    "iter_fields",
    "package_submission",
    "read_member",
    "report_lines",
    "resource_path",
    "validate_submission",
    "validation_pairs",
    "zero_submission",
]

LUMIR_SHAPE: tuple[int, int, int] = (160, 224, 192)
"""The LUMIR image grid ``(X, Y, Z)`` (1 mm, identity affine)."""

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same fields give the same zip bytes
_CHUNK = 1 << 23  # bytes per decompression step (a multiple of every dtype size)
_SHORT = re.compile(r"disp_(\d+)_(\d+)")
_LONG = re.compile(r"disp_(\d+)_(\d+)_(\d+)_(\d+)")
_EXT = re.compile(r"^(.*?)((?:\.nii)?(?:\.gz)?|\.npz|\.npy)$")


def resource_path(name: str) -> Path:
    """A bundled official LUMIR file (``LUMIR_dataset.json``, the two ``*_evaluation_config.json``)."""
    return Path(str(resources.files("dirbench") / "resources" / "lumir" / name))


# --------------------------------------------------------------------------- pairs


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


# --------------------------------------------------------------------------- reading zip members


class MemberError(Exception):
    """A zip member that cannot be read as a NIfTI file; the message says why (no file name)."""


@dataclass
class MemberData:
    """What :func:`read_member` found: the stored shape and dtype, non-finite count, optionally the data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nonfinite: int
    data: np.ndarray | None = None


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, load: bool = False) -> MemberData:
    """Stream one ``.nii.gz`` zip member: parse its NIfTI header, then decompress the voxels in chunks.

    Counts non-finite values (after the header's scl_slope / scl_inter, as ``get_fdata`` applies them)
    without holding the array unless ``load``; with ``load`` the data come back as stored
    (``[X, Y, Z, 3]`` or ``[3, X, Y, Z]``), float64 when scaled. Raises :class:`MemberError` for an
    unreadable member, so a validator can report it as one line and go on.
    """
    try:
        with zf.open(info) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            head = gz.read(4)
            if len(head) < 4:
                raise MemberError("empty or truncated file")
            sizes = {struct.unpack("<i", head)[0], struct.unpack(">i", head)[0]}
            klass = nib.Nifti1Header if 348 in sizes else nib.Nifti2Header if 540 in sizes else None
            if klass is None:
                raise MemberError("not a NIfTI file (no NIfTI-1/2 header)")
            block = head + gz.read(klass.template_dtype.itemsize - 4)
            header = klass(block, None, check=True)
            shape = tuple(int(n) for n in header.get_data_shape())
            dtype = header.get_data_dtype()
            offset = int(header.get_data_offset())
            if offset < len(block):
                raise MemberError(f"NIfTI header vox_offset {offset} lies inside the header")
            gz.read(offset - len(block))
            slope, inter = header.get_slope_inter()
            count = int(np.prod(shape, dtype=np.int64))
            want = count * dtype.itemsize
            out = np.empty(count, np.float64 if slope is not None else dtype) if load else None
            nonfinite, done, step = 0, 0, _CHUNK - _CHUNK % dtype.itemsize
            while done < want:
                chunk = gz.read(min(step, want - done))
                if not chunk:
                    raise MemberError(f"truncated: {done} of {want} data bytes")
                values = np.frombuffer(chunk, dtype)
                if slope is not None:
                    values = values.astype(np.float64) * slope + inter  # as get_fdata
                if values.dtype.kind in "fc":
                    nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                if out is not None:
                    start = done // dtype.itemsize
                    out[start : start + values.size] = values
                done += len(chunk)
    except (OSError, EOFError, zlib.error, ValueError, nib.spatialimages.HeaderDataError) as err:
        raise MemberError(f"unreadable ({type(err).__name__}: {err})") from None
    data = None if out is None else out.reshape(shape, order="F")  # NIfTI voxels are column-major
    return MemberData(shape, dtype, nonfinite, data)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Problem:
    """One finding: ``level`` ("error" or "warning"), ``where`` (a zip member, a file name or the zip)."""

    level: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


@dataclass
class ValidationReport:
    """The validator's findings; ``ok`` when there is no error (warnings allowed)."""

    zip_path: Path
    n_expected: int
    expected_shape: tuple[int, ...]
    problems: list[Problem] = field(default_factory=list)
    good: set[str] = field(default_factory=set)  # pair names with a well-formed member
    folder: str = ""
    members: dict[str, str] = field(default_factory=dict)  # pair name -> zip member

    def error(self, where: str, message: str) -> None:
        self.problems.append(Problem("error", where, message))

    def warn(self, where: str, message: str) -> None:
        self.problems.append(Problem("warning", where, message))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """The last line the CLI prints."""
        n_warn = len(self.warnings)
        if self.ok:
            where = f"in folder {self.folder}/" if self.folder else "at the zip root"
            shape = [*self.expected_shape, 3]
            extra = f" ({n_warn} warning(s))" if n_warn else ""
            return (f"valid: {self.n_expected} displacement fields {shape} for the {self.n_expected} "
                    f"validation pairs, {where}{extra}")
        return (f"invalid: {len(self.errors)} error(s), {n_warn} warning(s); {len(self.good)} of "
                f"{self.n_expected} validation pairs present and well-formed")


def _check_layout(report: ValidationReport, files: list[str]) -> None:
    """One top folder (the README layout); root files only warn; anything else is an error."""
    parents = sorted({str(Path(f).parent) for f in files})
    zip_name = report.zip_path.name
    if len(parents) > 1:
        shown = ", ".join("(root)" if p == "." else f"{p}/" for p in parents)
        report.error(zip_name, f"files in more than one folder ({shown}); put all of them in one top folder")
    elif parents == ["."]:
        report.warn(zip_name, "the files are at the zip root; the README layout is one top folder "
                              "(folder.zip -> folder/disp_*.nii.gz)")
    elif parents:
        report.folder = parents[0]
        if len(Path(parents[0]).parts) > 1:
            report.error(zip_name, f"the files are {len(Path(parents[0]).parts)} folders deep "
                                   f"({parents[0]}/); put them in one top folder")


def _match_names(report: ValidationReport, files: list[str], pairs: list[LumirPair]) -> list[tuple[str, str]]:
    """Map members to pairs; report unexpected, swapped, wrongly-suffixed, long-form and duplicate names.

    Returns ``(member, pair name)`` for each member whose data should be checked.
    """
    by_ids = {(p.fixed, p.moving): p for p in pairs}
    seen: dict[str, str] = {}
    matched: list[tuple[str, str]] = []
    for member in files:
        base = Path(member).name
        stem, ext = _EXT.match(base).groups()  # type: ignore[union-attr]
        long = _LONG.fullmatch(stem)
        short = _SHORT.fullmatch(stem)
        ids = (long.group(1), long.group(3)) if long else (short.group(1), short.group(2)) if short else None
        pair = by_ids.get(ids) if ids else None
        if pair is None:
            if ids and ids[::-1] in by_ids:
                right = by_ids[ids[::-1]]
                report.error(member, f"fixed and moving swapped: the validation pair is {right.name} "
                                     f"(fixed {right.fixed}, moving {right.moving})")
            else:
                report.error(member, f"unexpected file (not one of the {len(pairs)} validation pair fields)")
            continue
        if long and (long.group(2), long.group(4)) != (pair.fixed_modality, pair.moving_modality):
            report.error(member, f"unexpected file (the long form of this pair is {pair.long_name})")
            continue
        if ext != ".nii.gz":
            report.error(member, f"wrong format {ext or '(no suffix)'}: the LUMIR evaluator reads only "
                                 f"{pair.name}")
            continue
        if pair.name in seen:
            report.error(member, f"duplicate: pair {pair.fixed}/{pair.moving} is already given by {seen[pair.name]}")
            continue
        if long:
            report.warn(member, f"long-form name: accepted by the organisers (LUMIR_L2R issue #2), but the "
                                f"README uses {pair.name}")
        seen[pair.name] = member
        matched.append((member, pair.name))
    for pair in pairs:
        if pair.name not in seen:
            report.error(pair.name, f"missing (validation pair fixed {pair.fixed}, moving {pair.moving})")
    return matched


def _check_data(report: ValidationReport, member: str, data: MemberData) -> bool:
    """Shape, dtype and finiteness of one member; True if the evaluator would accept it."""
    want = (*report.expected_shape, 3)
    first = (3, *report.expected_shape)
    ok = True
    if data.shape == first:
        report.warn(member, f"channels-first shape {first}: the evaluator transposes it; {want} is the "
                            "documented layout")
    elif data.shape != want:
        report.error(member, f"shape {data.shape}; expected {want} (or {first})")
        ok = False
    kind, name = data.dtype.kind, data.dtype.name
    if kind == "f" and data.dtype.itemsize == 8:
        report.warn(member, "dtype float64 works but doubles the size; float32 is enough")
    elif kind != "f" or data.dtype.itemsize != 4:
        report.error(member, f"dtype {name}: a displacement must be float32")
        ok = False
    if data.nonfinite:
        report.error(member, f"{data.nonfinite} non-finite value(s) (NaN or inf)")
        ok = False
    return ok


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.is_file():
        raise UserError(f"{zip_path}: file not found")
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(f"{zip_path}: not a readable zip file: {err}") from None


def validate_submission(
    zip_path: str | Path,
    dataset_json: str | Path | None = None,
    expected_shape: tuple[int, int, int] = LUMIR_SHAPE,
) -> ValidationReport:
    """Check a submission zip the way the LUMIR evaluator will read it; never raises on content problems.

    Names against the validation pairs of ``dataset_json`` (missing, unexpected, swapped, duplicated,
    wrong suffix; long form warns), the folder layout, and per member the stored shape
    (``[*expected_shape, 3]``; channels-first warns), dtype (float32; float64 warns; anything else is an
    error) and finiteness. Members are streamed one at a time.
    """
    zip_path = Path(zip_path)
    pairs = validation_pairs(dataset_json)
    report = ValidationReport(zip_path, len(pairs), tuple(expected_shape))
    with _open_zip(zip_path) as zf:
        infos = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        counts = Counter(i.filename for i in zf.infolist() if not i.is_dir())
        for name, n in sorted(counts.items()):
            if n > 1:
                report.error(name, f"appears {n} times in the zip")
        files = sorted(infos)
        _check_layout(report, files)
        for member, pair_name in _match_names(report, files, pairs):
            try:
                data = read_member(zf, infos[member])
            except MemberError as err:
                report.error(member, str(err))
                continue
            if _check_data(report, member, data):
                report.good.add(pair_name)
                report.members[pair_name] = member
    return report


# --------------------------------------------------------------------------- writing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_folder(folder: str) -> None:
    if not folder or folder in {".", ".."} or "/" in folder or "\\" in folder:
        raise UserError(f"--folder {folder!r}: need a plain folder name (no slashes)")


def _write_zip(out: Path, folder: str, members: Iterable[tuple[str, Path, dict[str, Any]]],
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
    _check_folder(folder)
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
        return _write_zip(out, folder, members(Path(tmpdir)), info)


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
    _check_folder(folder)
    pairs = validation_pairs(dataset_json)
    info = {"format": "LUMIR24 validation submission (all-zero displacement)", "pairs": len(pairs),
            "shape": [*expected_shape, 3], "dtype": "float32", "units": "voxel"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".lumir-zero-") as tmpdir:
        zero = Path(tmpdir) / "zero.nii.gz"
        save_disp(zero, np.zeros((*expected_shape, 3), np.float32), np.eye(4))
        members = ((p.name, zero, {"source": "zeros", "converted": False}) for p in pairs)
        return _write_zip(out, folder, members, info)


def iter_fields(report: ValidationReport, pairs: list[LumirPair]) -> Iterator[tuple[LumirPair, np.ndarray]]:
    """Yield ``(pair, field [X, Y, Z, 3])`` for each pair of a *valid* report, one at a time.

    The values are those of the evaluator's ``get_fdata`` (float32 members stay float32, which holds
    them exactly; float64 or scaled members come as float64); channels-first members are transposed as
    the evaluator does.
    """
    with _open_zip(report.zip_path) as zf:
        for pair in pairs:
            data = read_member(zf, zf.getinfo(report.members[pair.name]), load=True).data
            assert data is not None
            if data.shape[0] == 3:
                data = np.moveaxis(data, 0, -1)
            dtype = np.float32 if data.dtype == np.float32 else np.float64
            yield pair, np.ascontiguousarray(data, dtype=dtype)


def report_lines(report: ValidationReport) -> str:
    """The validator's output: one line per problem, then the summary."""
    buf = io.StringIO()
    for problem in report.problems:
        print(problem, file=buf)
    print(report.summary(), file=buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- local evaluation

DSC, HD95, TRE, NDV = "DSC", "HD95", "TRE_lm", "Non-diffeomorphic Volumes"
"""The metric names of the official evaluation configs (the keys of the leaderboard's JSON)."""
METRICS = (DSC, HD95, TRE, NDV)


def aggregate(values: Sequence[float]) -> dict[str, float]:
    """The LUMIR evaluator's aggregate of case values: ``mean``, ``std`` (ddof 0) and ``"30"``
    (``np.quantile(values, 0.3)``), plus ``n``. NaN and inf propagate, as in the official code."""
    arr = np.asarray(values, np.float64)
    if not arr.size:
        return {"mean": math.nan, "std": math.nan, "30": math.nan, "n": 0}
    with np.errstate(invalid="ignore"):
        return {"mean": float(arr.mean()), "std": float(arr.std()), "30": float(np.quantile(arr, 0.3)),
                "n": int(arr.size)}


def _annotations(folder: Path, pair: LumirPair, shape: tuple[int, int, int]) -> tuple[dict, list[str]]:
    """Load ``folder/<fixed image name>`` and ``folder/<moving image name>`` if both exist."""
    paths = [folder / Path(rel).name for rel in (pair.fixed_image, pair.moving_image)]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        return {}, absent
    return {"fixed": load_labels(paths[0], shape), "moving": load_labels(paths[1], shape)}, []


def evaluate_submission(
    zip_path: str | Path,
    data_dir: str | Path,
    labels_dir: str | Path | None = None,
    landmarks_dir: str | Path | None = None,
    dataset_json: str | Path | None = None,
    expected_shape: tuple[int, int, int] = LUMIR_SHAPE,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The LUMIR-2024 validation metrics of a submission, on whatever annotations are at hand.

    As the official evaluator (spec §4–§6): NDV (%) for every pair whose moving image
    ``data_dir/imagesVal/…`` exists, masked by moving image > 0 (the LUMIR 2024 rule); DSC and HD95
    over the 133 LUMIR labels (0 included) for the 29 pairs of the segmentation config whose fixed and
    moving label maps exist in ``labels_dir`` (default ``data_dir/labelsVal``, same file names as the
    images); TRE (mm) for the 9 pairs of the landmark config whose landmark volumes exist in
    ``landmarks_dir`` (default ``data_dir/landmarksVal``). Per metric the ``aggregates`` are
    :func:`aggregate` over the cases that have it. ``coverage`` lists those cases per metric and
    ``not_evaluated`` says, per case, what was skipped and which file was missing.

    Raises :class:`UserError` if the zip fails :func:`validate_submission` (the leaderboard would
    reject it too) or a present annotation file is unreadable or of the wrong shape.
    """
    zip_path, data_dir = Path(zip_path), Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: LUMIR data folder not found")
    labels_dir = Path(labels_dir) if labels_dir is not None else data_dir / "labelsVal"
    landmarks_dir = Path(landmarks_dir) if landmarks_dir is not None else data_dir / "landmarksVal"
    report = validate_submission(zip_path, dataset_json, expected_shape)
    if not report.ok:
        shown = "; ".join(str(p) for p in report.errors[:3])
        raise UserError(f"{zip_path}: not a valid submission ({len(report.errors)} error(s), e.g. {shown}); "
                        "run dirbench lumir-validate for the full list")
    seg_cases = {p.case for p in config_pairs("Segmentation")}
    lm_cases = {p.case for p in config_pairs("Landmark")}
    labels = metrics.lumir_labels()
    pairs = validation_pairs(dataset_json)
    cases: dict[str, dict[str, Any]] = {}
    skipped: dict[str, list[str]] = {}
    for k, (pair, disp) in enumerate(iter_fields(report, pairs), 1):
        notes: list[str] = []
        kwargs: dict[str, Any] = {"labels": labels}
        moving_image = data_dir / pair.moving_image
        if moving_image.is_file():
            kwargs["moving_image"] = load_image(moving_image, expected_shape)
        else:
            notes.append(f"{NDV}: no moving image {moving_image}")
        segs: dict[str, np.ndarray] = {}
        if pair.case in seg_cases:
            segs, absent = _annotations(labels_dir, pair, expected_shape)
            if absent:
                notes.append(f"{DSC}, {HD95}: no label map {', '.join(absent)}")
            else:
                kwargs.update(fixed_seg=segs["fixed"], moving_seg=segs["moving"])
        lms: dict[str, np.ndarray] = {}
        if pair.case in lm_cases:
            lms, absent = _annotations(landmarks_dir, pair, expected_shape)
            if absent:
                notes.append(f"{TRE}: no landmark volume {', '.join(absent)}")
            else:
                kwargs.update(fixed_landmarks=lms["fixed"], moving_landmarks=lms["moving"])
        kind = "moving" if "moving_image" in kwargs else "none"
        result = metrics.evaluate_pair(disp, ndv_mask_kind=kind, threads=threads, **kwargs)
        case: dict[str, Any] = {}
        if segs:
            case[DSC] = {"mean": result.dice, "detailed": result.dice_per_label.tolist()}
            case[HD95] = {"mean": result.hd95, "detailed": result.hd95_per_label.tolist()}
        if lms:
            case[TRE] = {"mean": result.tre, "detailed": result.tre_per_landmark.tolist()}
        if kind == "moving":
            case[NDV] = {"mean": result.ndv, "detailed": result.ndv}
        cases[pair.case] = case
        if notes:
            skipped[pair.case] = notes
        if progress is not None:
            shown = ", ".join(f"{m} {v['mean']:.4f}" for m, v in case.items()) or "nothing to evaluate"
            progress(f"[{k}/{len(pairs)}] {pair.case}: {shown}")
    coverage = {m: [c for c, v in cases.items() if m in v] for m in METRICS}
    return {
        "name": "LUMIR",
        "submission": str(zip_path),
        "data_dir": str(data_dir),
        "labels_dir": str(labels_dir),
        "landmarks_dir": str(landmarks_dir),
        "ndv_mask": "moving image > 0 (LUMIR 2024)",
        "aggregates": {m: aggregate([cases[c][m]["mean"] for c in coverage[m]]) for m in METRICS},
        "coverage": coverage,
        "not_evaluated": skipped,
        "cases": cases,
    }
