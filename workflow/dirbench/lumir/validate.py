"""The submission validator: the zip checked the way the LUMIR evaluator will read it, member by member.

Why not :mod:`dirbench.io`: ``dirbench.io`` loads a whole array from a file on disk (``nibabel.load`` by path)
and raises on the first problem. The validator reads the members of a zip without extracting it (a
submission is 38 gzipped fields, about 3 GB unpacked), counts non-finite values chunk by chunk without
holding a whole field, and reports every problem per member instead of stopping. nibabel's image classes read
a file object's voxels in one piece (their array proxy seeks to the data offset and reads it all), so
:func:`read_member` hands only the header block to nibabel's own header classes (``Nifti1Header`` /
``Nifti2Header``: the parsing, scaling and dtype rules stay nibabel's) and decompresses the voxels itself; that
framing (gzip stream → header block → voxel chunks) is the only NIfTI reading of our own.
"""

from __future__ import annotations

import gzip
import io
import re
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from dirbench.errors import UserError
from dirbench.lumir.pairs import LUMIR_SHAPE, LumirPair, validation_pairs

__all__ = [
    "MemberData",
    "MemberError",
    "Problem",
    "ValidationReport",
    "iter_fields",
    "read_member",
    "report_lines",
    "validate_submission",
]

_CHUNK = 1 << 23  # bytes per decompression step (a multiple of every dtype size)
_SHORT = re.compile(r"disp_(\d+)_(\d+)")
_LONG = re.compile(r"disp_(\d+)_(\d+)_(\d+)_(\d+)")
_EXT = re.compile(r"^(.*?)((?:\.nii)?(?:\.gz)?|\.npz|\.npy)$")



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
