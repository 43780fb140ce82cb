"""LUMIR submission packaging, validation, the zero submission and local evaluation (``dirbench.lumir``).

Synthetic fields on a 16³ grid stand in for the 160×224×192 LUMIR grid (every function takes
``expected_shape``); the pair names are the 38 real validation pairs of the bundled official JSON.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dirbench.cli import main
from dirbench.errors import UserError
from dirbench.io import save_disp, save_image, save_labels
from dirbench.lumir import (
    LUMIR_SHAPE,
    Problem,
    evaluate_submission,
    package_submission,
    read_member,
    validate_submission,
    validation_pairs,
    zero_submission,
)
from dirbench.metrics import compute_ndv, lumir_labels

SHAPE = (16, 16, 16)
PAIRS = validation_pairs()
NAMES = [p.name for p in PAIRS]


def _field(rng: np.random.Generator, shape: tuple[int, ...] = (*SHAPE, 3)) -> np.ndarray:
    return rng.normal(0.0, 2.0, shape).astype(np.float32)


def _nifti_bytes(data: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    """A ``.nii.gz`` file's bytes (dtype as given), written through nibabel."""
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    img.header.set_data_dtype(data.dtype)
    return gzip.compress(img.to_bytes(), compresslevel=1)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def good_member() -> bytes:
    return _nifti_bytes(_field(np.random.default_rng(7)))


def _members(good: bytes, folder: str = "sub/", **replace: bytes | None) -> dict[str, bytes]:
    """The 38 well-formed members under ``folder``; ``replace`` maps a pair name (dots as ``_``) to new bytes
    or None (drop it)."""
    out = {}
    for name in NAMES:
        key = name.replace(".", "_")
        data = replace.get(key, good)
        if data is not None:
            out[folder + name] = data
    return out


def _problems(report) -> list[str]:
    return [str(p) for p in report.problems]


# --------------------------------------------------------------------------- pairs and labels


def test_official_pairs_and_labels() -> None:
    assert len(PAIRS) == 38
    assert NAMES[0] == "disp_3455_3454.nii.gz"
    assert PAIRS[0].long_name == "disp_3455_0000_3454_0000.nii.gz"
    # spec §7.1: fixed = k + 1, moving = k for k = 3454..3482 and 3484..3492 (no 3484/3483 pair)
    ks = [*range(3454, 3483), *range(3484, 3493)]
    assert [(p.fixed, p.moving) for p in PAIRS] == [(str(k + 1), str(k)) for k in ks]


# --------------------------------------------------------------------------- packaging


@pytest.fixture
def disp_dir(tmp_path: Path, rng: np.random.Generator) -> Path:
    d = tmp_path / "disp"
    for name in NAMES:
        save_disp(d / name, _field(rng), np.eye(4))
    return d


def test_package_then_validate(disp_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "mysub.zip"
    manifest = package_submission(disp_dir, out, expected_shape=SHAPE)
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        assert sorted(i.filename for i in infos) == sorted(f"mysub/{n}" for n in NAMES)
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        for info in infos:
            member = zf.read(info)
            src = disp_dir / Path(info.filename).name
            assert member == src.read_bytes()  # canonical inputs are copied byte for byte
    saved = json.loads(Path(f"{out}.json").read_text())
    assert saved["zip_sha256"] == manifest["zip_sha256"]
    assert saved["zip_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    by_name = {m["name"]: m for m in saved["members"]}
    assert by_name["mysub/disp_3455_3454.nii.gz"]["sha256"] == hashlib.sha256(
        (disp_dir / "disp_3455_3454.nii.gz").read_bytes()).hexdigest()
    report = validate_submission(out, expected_shape=SHAPE)
    assert report.problems == []
    assert report.summary() == ("valid: 38 displacement fields [16, 16, 16, 3] for the 38 validation pairs, "
                                "in folder mysub/")


def test_package_converts_layout_dtype_and_affine(disp_dir: Path, tmp_path: Path, rng) -> None:
    field = rng.normal(0, 1.5, (3, *SHAPE))  # float64, channels first, scaled affine
    img = nib.Nifti1Image(field, np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(img, str(disp_dir / "disp_3460_3459.nii.gz"))
    (disp_dir / "disp_3461_3460.nii.gz").unlink()  # the long form is accepted as input
    long_field = _field(rng)
    save_disp(disp_dir / "disp_3461_0000_3460_0000.nii.gz", long_field, np.eye(4))
    out = tmp_path / "s.zip"
    manifest = package_submission(disp_dir, out, folder="team", expected_shape=SHAPE)
    assert [m["converted"] for m in manifest["members"]].count(True) == 1
    with zipfile.ZipFile(out) as zf:
        got = nib.Nifti1Image.from_bytes(gzip.decompress(zf.read("team/disp_3460_3459.nii.gz")))
        assert got.get_data_dtype() == np.float32 and got.shape == (*SHAPE, 3)
        np.testing.assert_array_equal(got.affine, np.eye(4))
        np.testing.assert_array_equal(np.asanyarray(got.dataobj), np.moveaxis(field, 0, -1).astype(np.float32))
        long_got = nib.Nifti1Image.from_bytes(gzip.decompress(zf.read("team/disp_3461_3460.nii.gz")))
        np.testing.assert_array_equal(np.asanyarray(long_got.dataobj), long_field)
    assert validate_submission(out, expected_shape=SHAPE).ok


def test_package_missing_lists_names(disp_dir: Path, tmp_path: Path) -> None:
    (disp_dir / "disp_3456_3455.nii.gz").unlink()
    (disp_dir / "disp_3493_3492.nii.gz").unlink()
    with pytest.raises(UserError) as err:
        package_submission(disp_dir, tmp_path / "s.zip", expected_shape=SHAPE)
    assert str(err.value) == (f"{disp_dir}: missing 2 of 38 displacement files: "
                              "disp_3456_3455.nii.gz, disp_3493_3492.nii.gz")
    assert not (tmp_path / "s.zip").exists()


def test_package_refuses_nan_and_wrong_shape(disp_dir: Path, tmp_path: Path, rng) -> None:
    bad = _field(rng)
    bad[1, 2, 3, 0] = np.nan
    path = disp_dir / "disp_3470_3469.nii.gz"
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(path))
    with pytest.raises(UserError, match=r"disp_3470_3469\.nii\.gz: 1 non-finite value\(s\)"):
        package_submission(disp_dir, tmp_path / "s.zip", expected_shape=SHAPE)
    save_disp(path, _field(rng, (16, 16, 15, 3)), np.eye(4))
    with pytest.raises(UserError, match=r"disp_3470_3469\.nii\.gz: expected spatial shape \(16, 16, 16\)"):
        package_submission(disp_dir, tmp_path / "s.zip", expected_shape=SHAPE)
    assert not (tmp_path / "s.zip").exists() and not (tmp_path / "s.zip.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_package_rejects_bad_folder(disp_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="need a plain folder name"):
        package_submission(disp_dir, tmp_path / "s.zip", folder="a/b", expected_shape=SHAPE)


# --------------------------------------------------------------------------- the streaming reader


def test_read_member_matches_nibabel(tmp_path: Path, rng) -> None:
    """Chunked decompression (column-major voxels, scl_slope/inter, big-endian) equals ``get_fdata``."""
    field = _field(rng, (5, 7, 6, 3))
    scaled = nib.Nifti1Image(field, np.eye(4))
    scaled.header.set_slope_inter(2.0, 0.5)
    big = nib.Nifti1Image(field.astype(">f8"), np.eye(4))
    big.header.set_data_dtype(">f8")
    cases = {
        "plain.nii.gz": _nifti_bytes(field),
        "scaled.nii.gz": gzip.compress(scaled.to_bytes()),
        "big.nii.gz": gzip.compress(big.to_bytes()),
    }
    path = _zip(tmp_path / "r.zip", cases)
    with zipfile.ZipFile(path) as zf:
        for name, raw in cases.items():
            expect = nib.Nifti1Image.from_bytes(gzip.decompress(raw)).get_fdata()
            got = read_member(zf, zf.getinfo(name), load=True)
            assert got.shape == (5, 7, 6, 3) and got.nonfinite == 0
            np.testing.assert_array_equal(got.data, expect)
            if name == "scaled.nii.gz":  # independent of nibabel: the NIfTI scaling rule
                np.testing.assert_allclose(got.data, 2.0 * field.astype(np.float64) + 0.5, rtol=1e-12)


# --------------------------------------------------------------------------- validator messages


def test_validate_missing(tmp_path: Path, good_member: bytes) -> None:
    path = _zip(tmp_path / "s.zip", _members(good_member, disp_3456_3455_nii_gz=None))
    report = validate_submission(path, expected_shape=SHAPE)
    assert _problems(report) == ["error: disp_3456_3455.nii.gz: missing (validation pair fixed 3456, moving 3455)"]
    assert report.summary() == "invalid: 1 error(s), 0 warning(s); 37 of 38 validation pairs present and well-formed"


def test_validate_wrong_shape(tmp_path: Path, good_member: bytes, rng) -> None:
    bad = _nifti_bytes(_field(rng, (16, 16, 15, 3)))
    path = _zip(tmp_path / "s.zip", _members(good_member, disp_3460_3459_nii_gz=bad))
    assert _problems(validate_submission(path, expected_shape=SHAPE)) == [
        "error: sub/disp_3460_3459.nii.gz: shape (16, 16, 15, 3); expected (16, 16, 16, 3) (or (3, 16, 16, 16))"]


def test_validate_float64_and_channels_first_warn(tmp_path: Path, good_member: bytes, rng) -> None:
    f64 = _nifti_bytes(_field(rng).astype(np.float64))
    first = _nifti_bytes(np.ascontiguousarray(np.moveaxis(_field(rng), -1, 0)))
    path = _zip(tmp_path / "s.zip", _members(good_member, disp_3460_3459_nii_gz=f64,
                                            disp_3461_3460_nii_gz=first))
    report = validate_submission(path, expected_shape=SHAPE)
    assert _problems(report) == [
        "warning: sub/disp_3460_3459.nii.gz: dtype float64 works but doubles the size; float32 is enough",
        "warning: sub/disp_3461_3460.nii.gz: channels-first shape (3, 16, 16, 16): the evaluator transposes it; "
        "(16, 16, 16, 3) is the documented layout",
    ]
    assert report.ok and report.summary().endswith("in folder sub/ (2 warning(s))")


def test_validate_nan_and_integer(tmp_path: Path, good_member: bytes, rng) -> None:
    nan = _field(rng)
    nan[0, 0, 0, :] = [np.nan, np.inf, 1.0]
    ints = np.zeros((*SHAPE, 3), np.int16)
    path = _zip(tmp_path / "s.zip", _members(good_member, disp_3460_3459_nii_gz=_nifti_bytes(nan),
                                            disp_3470_3469_nii_gz=_nifti_bytes(ints)))
    report = validate_submission(path, expected_shape=SHAPE)
    assert _problems(report) == [
        "error: sub/disp_3460_3459.nii.gz: 2 non-finite value(s) (NaN or inf)",
        "error: sub/disp_3470_3469.nii.gz: dtype int16: a displacement must be float32",
    ]
    assert len(report.good) == 36


def test_validate_unexpected_extra_file(tmp_path: Path, good_member: bytes) -> None:
    members = _members(good_member)
    members["sub/notes.txt"] = b"hello"
    path = _zip(tmp_path / "s.zip", members)
    assert _problems(validate_submission(path, expected_shape=SHAPE)) == [
        "error: sub/notes.txt: unexpected file (not one of the 38 validation pair fields)"]


def test_validate_swapped_name(tmp_path: Path, good_member: bytes) -> None:
    members = _members(good_member, disp_3455_3454_nii_gz=None)
    members["sub/disp_3454_3455.nii.gz"] = good_member
    path = _zip(tmp_path / "s.zip", members)
    assert _problems(validate_submission(path, expected_shape=SHAPE)) == [
        "error: sub/disp_3454_3455.nii.gz: fixed and moving swapped: the validation pair is "
        "disp_3455_3454.nii.gz (fixed 3455, moving 3454)",
        "error: disp_3455_3454.nii.gz: missing (validation pair fixed 3455, moving 3454)",
    ]


def test_validate_long_form_duplicate_and_suffix(tmp_path: Path, good_member: bytes) -> None:
    members = _members(good_member, disp_3455_3454_nii_gz=None, disp_3456_3455_nii_gz=None)
    members["sub/disp_3455_0000_3454_0000.nii.gz"] = good_member
    members["sub/disp_3456_3455.npz"] = b"x"
    members["sub/disp_3457_0000_3456_0000.nii.gz"] = good_member  # the short form is there too
    report = validate_submission(_zip(tmp_path / "s.zip", members), expected_shape=SHAPE)
    assert _problems(report) == [
        "warning: sub/disp_3455_0000_3454_0000.nii.gz: long-form name: accepted by the organisers "
        "(LUMIR_L2R issue #2), but the README uses disp_3455_3454.nii.gz",
        "error: sub/disp_3456_3455.npz: wrong format .npz: the LUMIR evaluator reads only disp_3456_3455.nii.gz",
        "warning: sub/disp_3457_0000_3456_0000.nii.gz: long-form name: accepted by the organisers "
        "(LUMIR_L2R issue #2), but the README uses disp_3457_3456.nii.gz",
        "error: sub/disp_3457_3456.nii.gz: duplicate: pair 3457/3456 is already given by "
        "sub/disp_3457_0000_3456_0000.nii.gz",
        "error: disp_3456_3455.nii.gz: missing (validation pair fixed 3456, moving 3455)",
    ]


def test_validate_layout(tmp_path: Path, good_member: bytes) -> None:
    root = validate_submission(_zip(tmp_path / "a.zip", _members(good_member, folder="")), expected_shape=SHAPE)
    assert _problems(root) == ["warning: a.zip: the files are at the zip root; the README layout is one top "
                               "folder (folder.zip -> folder/disp_*.nii.gz)"]
    assert root.ok and root.summary().endswith("at the zip root (1 warning(s))")
    members = _members(good_member)
    members["other/" + NAMES[0]] = members.pop("sub/" + NAMES[0])
    two = validate_submission(_zip(tmp_path / "b.zip", members), expected_shape=SHAPE)
    assert _problems(two) == ["error: b.zip: files in more than one folder (other/, sub/); "
                              "put all of them in one top folder"]
    deep = validate_submission(_zip(tmp_path / "c.zip", _members(good_member, folder="x/y/")),
                               expected_shape=SHAPE)
    assert _problems(deep) == ["error: c.zip: the files are 2 folders deep (x/y/); put them in one top folder"]


def test_validate_corrupt_member_and_not_a_zip(tmp_path: Path, good_member: bytes) -> None:
    path = _zip(tmp_path / "s.zip", _members(good_member, disp_3460_3459_nii_gz=good_member[:2000]))
    (problem,) = validate_submission(path, expected_shape=SHAPE).problems
    assert problem.where == "sub/disp_3460_3459.nii.gz" and problem.level == "error"
    assert problem.message.startswith("unreadable (EOFError")
    plain = _zip(tmp_path / "p.zip", _members(good_member, disp_3460_3459_nii_gz=b"\x1f\x8b" + b"x" * 40))
    assert validate_submission(plain, expected_shape=SHAPE).problems[0].message.startswith("unreadable (")
    (tmp_path / "n.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"n\.zip: not a readable zip file"):
        validate_submission(tmp_path / "n.zip", expected_shape=SHAPE)
    assert Problem("error", "x", "y").__str__() == "error: x: y"


# --------------------------------------------------------------------------- zero submission


def test_zero_submission_validates(tmp_path: Path) -> None:
    out = tmp_path / "zero.zip"
    manifest = zero_submission(out, expected_shape=SHAPE)
    assert len(manifest["members"]) == 38 and manifest["folder"] == "zero"
    report = validate_submission(out, expected_shape=SHAPE)
    assert report.ok and report.problems == []
    with zipfile.ZipFile(out) as zf:
        for name in NAMES:
            got = read_member(zf, zf.getinfo(f"zero/{name}"), load=True)
            assert got.dtype == np.float32 and got.shape == (*SHAPE, 3)
            assert not got.data.any()


def test_zero_submission_real_shape(tmp_path: Path) -> None:
    """The real 160×224×192 grid: 38 zero fields (~0.36 MB each) write and validate in a few seconds."""
    out = tmp_path / "zero.zip"
    zero_submission(out)
    report = validate_submission(out)
    assert report.ok and report.problems == [] and len(report.good) == 38
    with zipfile.ZipFile(out) as zf:
        img = nib.Nifti1Image.from_bytes(gzip.decompress(zf.read("zero/disp_3493_3492.nii.gz")))
    assert img.shape == (*LUMIR_SHAPE, 3) and img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.affine, np.eye(4))


# --------------------------------------------------------------------------- CLI


def test_cli_zero_validate_package(tmp_path: Path, disp_dir: Path, capsys) -> None:
    shape = ["--shape", *map(str, SHAPE)]
    assert main(["lumir-zero", "--out", str(tmp_path / "z.zip"), *shape]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["lumir-validate", str(tmp_path / "z.zip"), *shape]) == 0
    assert capsys.readouterr().out == ("valid: 38 displacement fields [16, 16, 16, 3] for the 38 validation "
                                       "pairs, in folder z/\n")
    assert main(["lumir-validate", str(tmp_path / "z.zip")]) == 1  # the real LUMIR grid is expected
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 39 and lines[0] == ("error: z/disp_3455_3454.nii.gz: shape (16, 16, 16, 3); expected "
                                             "(160, 224, 192, 3) (or (3, 160, 224, 192))")
    assert main(["lumir-package", "--disp-dir", str(disp_dir), "--out", str(tmp_path / "p.zip"),
                 "--folder", "team", *shape]) == 0
    assert main(["lumir-validate", str(tmp_path / "p.zip"), *shape]) == 0
    (disp_dir / NAMES[5]).unlink()
    assert main(["lumir-package", "--disp-dir", str(disp_dir), "--out", str(tmp_path / "q.zip"), *shape]) == 1
    assert capsys.readouterr().err.strip().endswith(f"missing 1 of 38 displacement files: {NAMES[5]}")
    custom = tmp_path / "ds.json"
    custom.write_text(json.dumps({"training": [], "validation": [
        {"fixed": "./imagesVal/LUMIRMRI_3455_0000.nii.gz", "moving": "./imagesVal/LUMIRMRI_3454_0000.nii.gz"}]}))
    assert main(["lumir-zero", "--out", str(tmp_path / "one.zip"), "--dataset-json", str(custom), *shape]) == 0
    assert main(["lumir-validate", str(tmp_path / "one.zip"), "--dataset-json", str(custom), *shape]) == 0
    assert "valid: 1 displacement fields" in capsys.readouterr().out


# --------------------------------------------------------------------------- local evaluation

SEG_A, SEG_B = "3456_0000<--3455_0000", "3457_0000<--3456_0000"  # pairs of the segmentation config
LM_A, LM_B = "3486_0000<--3485_0000", "3487_0000<--3486_0000"  # pairs of the landmark config
NO_IMAGE = "3471_0000<--3470_0000"  # its moving image is left out
LABELS = lumir_labels()


def _img_name(i: int) -> str:
    return f"LUMIRMRI_{i}_0000.nii.gz"


@pytest.fixture(scope="module")
def lumir_dir(tmp_path_factory) -> Path:
    """A 16³ LUMIR layout: imagesVal (all 40 but 3470), labelsVal for 3455-3457 (3457 = a copy of 3456),
    landmarksVal for 3485-3487 (four 2×2×2 blobs each)."""
    root = tmp_path_factory.mktemp("lumir")
    rng = np.random.default_rng(3)
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0) - 7.5
    for i in range(3454, 3494):
        if i != 3470:  # brain masks (image > 0) of radius 4, 5 or 6 voxels
            image = np.where((grid**2).sum(-1) < (4 + i % 3) ** 2, rng.uniform(1, 255, SHAPE), 0).astype(np.float32)
            save_image(root / "imagesVal" / _img_name(i), image, np.eye(4))
    ids = np.array([0, 4, 11, 23, 30, 31, 1])  # 1 is not a LUMIR label: ignored
    for i in (3455, 3456):
        cut = rng.integers(5, 11, size=3)
        seg = ids[(grid[..., 0] + 7.5 > cut[0]) * 1 + (grid[..., 1] + 7.5 > cut[1]) * 2
                  + (grid[..., 2] + 7.5 > cut[2]) * 3]
        if i == 3455:
            seg[seg == 30] = 0  # label 30 absent from this moving map: excluded (NaN) in pair 3456/3455
        save_labels(root / "labelsVal" / _img_name(i), seg, np.eye(4))
    (root / "labelsVal" / _img_name(3457)).write_bytes((root / "labelsVal" / _img_name(3456)).read_bytes())
    for i in (3485, 3486, 3487):
        lms = np.zeros(SHAPE, np.int16)
        for lid in range(1, 5):
            x, y, z = rng.integers(2, 12, size=3)
            lms[x : x + 2, y : y + 2, z : z + 2] = lid
        save_labels(root / "landmarksVal" / _img_name(i), lms, np.eye(4))
    return root


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).astype(np.int64)


def _dice_ref(fixed: np.ndarray, moving: np.ndarray, warped: np.ndarray) -> float:
    """Independent LUMIR case Dice: per label 2|F∩W|/(|F|+|W|), skipped if absent from F or the original M."""
    scores = [2 * np.sum((fixed == lab) & (warped == lab)) / (np.sum(fixed == lab) + np.sum(warped == lab))
              for lab in LABELS if (fixed == lab).any() and (moving == lab).any()]
    return float(np.mean(scores))


def _tre_ref(fixed: np.ndarray, warped: np.ndarray) -> float:
    ids = [i for i in np.unique(fixed) if i]
    return float(np.mean([np.linalg.norm(np.argwhere(fixed == i).mean(0) - np.argwhere(warped == i).mean(0))
                          for i in ids]))


def _shift0(volume: np.ndarray) -> np.ndarray:
    """``volume`` pulled through u = (1, 0, 0): out[x] = volume[x + 1], 0 past the end."""
    out = np.zeros_like(volume)
    out[:-1] = volume[1:]
    return out


def _check_evaluation(result: dict, root: Path, warp) -> None:
    cases = result["cases"]
    assert len(cases) == 38
    assert result["coverage"]["DSC"] == result["coverage"]["HD95"] == [SEG_A, SEG_B]
    assert result["coverage"]["TRE_lm"] == [LM_A, LM_B]
    assert result["coverage"]["Non-diffeomorphic Volumes"] == [c for c in cases if c != NO_IMAGE]
    lab = root / "labelsVal"
    for case, (f, m) in {SEG_A: (3456, 3455), SEG_B: (3457, 3456)}.items():
        fixed, moving = _load(lab / _img_name(f)), _load(lab / _img_name(m))
        assert cases[case]["DSC"]["mean"] == pytest.approx(_dice_ref(fixed, moving, warp(moving)), abs=1e-12)
        assert len(cases[case]["DSC"]["detailed"]) == 133
    lm = root / "landmarksVal"
    for case, (f, m) in {LM_A: (3486, 3485), LM_B: (3487, 3486)}.items():
        fixed, moving = _load(lm / _img_name(f)), _load(lm / _img_name(m))
        assert cases[case]["TRE_lm"]["mean"] == pytest.approx(_tre_ref(fixed, warp(moving)), abs=1e-12)
    for metric, agg in result["aggregates"].items():
        values = np.array([cases[c][metric]["mean"] for c in result["coverage"][metric]])
        assert agg == pytest.approx({"mean": values.mean(), "std": values.std(), "30": np.quantile(values, 0.3),
                                     "n": values.size})
    assert result["not_evaluated"]["3455_0000<--3454_0000"] == [
        f"DSC, HD95: no label map {lab / _img_name(3454)}"]
    assert result["not_evaluated"][NO_IMAGE] == [
        f"Non-diffeomorphic Volumes: no moving image {root / 'imagesVal' / _img_name(3470)}",
        f"DSC, HD95: no label map {lab / _img_name(3471)}, {lab / _img_name(3470)}"]
    assert result["not_evaluated"]["3485_0000<--3484_0000"] == [f"TRE_lm: no landmark volume {lm / _img_name(3484)}"]


def test_evaluate_zero_submission(tmp_path: Path, lumir_dir: Path) -> None:
    zero_submission(tmp_path / "zero.zip", expected_shape=SHAPE)
    result = evaluate_submission(tmp_path / "zero.zip", lumir_dir, expected_shape=SHAPE)
    _check_evaluation(result, lumir_dir, warp=lambda v: v)
    assert result["aggregates"]["Non-diffeomorphic Volumes"]["mean"] == 0.0
    assert result["cases"][SEG_B]["DSC"]["mean"] == 1.0 and result["cases"][SEG_B]["HD95"]["mean"] == 0.0
    assert np.isnan(result["cases"][SEG_A]["DSC"]["detailed"][LABELS.index(30)])  # absent from the moving map


def test_evaluate_translation_via_package(tmp_path: Path, lumir_dir: Path) -> None:
    """u = (1, 0, 0) everywhere: labels and landmarks move by one voxel, NDV stays 0."""
    shift = np.zeros((*SHAPE, 3), np.float32)
    shift[..., 0] = 1.0
    for name in NAMES:
        save_disp(tmp_path / "disp" / name, shift, np.eye(4))
    folding = np.random.default_rng(5).normal(0.0, 1.0, (*SHAPE, 3)).astype(np.float32)
    save_disp(tmp_path / "disp" / "disp_3460_3459.nii.gz", folding, np.eye(4))
    package_submission(tmp_path / "disp", tmp_path / "t.zip", expected_shape=SHAPE)
    result = evaluate_submission(tmp_path / "t.zip", lumir_dir, expected_shape=SHAPE)
    _check_evaluation(result, lumir_dir, warp=_shift0)
    ndvs = {c: v["Non-diffeomorphic Volumes"]["mean"] for c, v in result["cases"].items() if c != NO_IMAGE}
    assert {c: v for c, v in ndvs.items() if v != 0.0}.keys() == {"3460_0000<--3459_0000"}
    images = lumir_dir / "imagesVal"
    moving = np.asarray(nib.load(str(images / _img_name(3459))).dataobj) > 0  # LUMIR 2024: the moving mask
    fixed = np.asarray(nib.load(str(images / _img_name(3460))).dataobj) > 0
    assert ndvs["3460_0000<--3459_0000"] == pytest.approx(compute_ndv(folding, moving), rel=1e-12)
    ndv_moving = compute_ndv(folding, moving)
    assert ndv_moving != pytest.approx(compute_ndv(folding, fixed), rel=1e-3) and ndv_moving > 1.0
    assert result["cases"][SEG_B]["DSC"]["mean"] < 1.0


def test_evaluate_rejects_invalid_and_cli(tmp_path: Path, lumir_dir: Path, good_member: bytes, capsys) -> None:
    bad = _zip(tmp_path / "bad.zip", _members(good_member, disp_3456_3455_nii_gz=None))
    with pytest.raises(UserError) as err:
        evaluate_submission(bad, lumir_dir, expected_shape=SHAPE)
    assert str(err.value) == (f"{bad}: not a valid submission (1 error(s), e.g. error: disp_3456_3455.nii.gz: "
                              "missing (validation pair fixed 3456, moving 3455)); run dirbench lumir-validate "
                              "for the full list")
    zero_submission(tmp_path / "z.zip", expected_shape=SHAPE)
    out = tmp_path / "metrics.json"
    assert main(["lumir-evaluate", str(tmp_path / "z.zip"), "--data-dir", str(lumir_dir), "--json", str(out),
                 "--shape", *map(str, SHAPE)]) == 0
    printed = capsys.readouterr()
    saved = json.loads(out.read_text())
    assert saved["aggregates"]["DSC"]["n"] == 2 and saved["aggregates"]["TRE_lm"]["n"] == 2
    assert "  Non-diffeomorphic Volumes  37 cases  mean 0.0000  std 0.0000  30% 0.0000" in printed.out
    assert printed.err.count("\n") == 38  # one progress line per pair
    assert main(["lumir-evaluate", str(tmp_path / "z.zip"), "--data-dir", str(tmp_path / "nowhere"),
                 "--json", str(out), "--shape", *map(str, SHAPE)]) == 1
    assert "LUMIR data folder not found" in capsys.readouterr().err
