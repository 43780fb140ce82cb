"""``dirbench data oasis`` on a tiny neurite-oasis-like tar (served over HTTP on 127.0.0.1 or local)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dirbench.cli import main
from dirbench.data.oasis import OASIS_MD5, SPLIT_DIR, prepare_oasis, read_split
from dirbench.dataset import Dataset
from dirbench.errors import UserError
from http_fixtures import FileServer, lia_affine, make_oasis_tar, write_split

RAW = (8, 12, 10)  # LIA, like 160x192x224
RAS = (8, 10, 12)  # like 160x224x192
MARKER = (1, 2, 3)  # LIA index of a bright voxel
# subjects.txt is shuffled; ids follow the sorted rank: 0001, 0003, 0010, 0042, 0100 -> img0001..img0005.
SUBJECTS = ["OASIS_OAS1_0042_MR1", "OASIS_OAS1_0001_MR1", "OASIS_OAS1_0100_MR1", "OASIS_OAS1_0003_MR1",
            "OASIS_OAS1_0010_MR1"]  # fmt: skip
PAIRS = {
    "val": [(4, 1)],
    "test_200": [(5, 4), (4, 5), (5, 2)],
    "test_100": [(5, 4), (4, 5)],
    "test_020": [(5, 4)],
}


def _volumes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Subject of sorted rank r: image = r/10 everywhere but 1.0 at MARKER; seg = random labels 0..35."""
    rng = np.random.default_rng(3)
    out = {}
    for rank, name in enumerate(sorted(SUBJECTS), 1):
        image = np.full(RAW, rank / 10, dtype=np.float32)
        image[MARKER] = 1.0
        out[name] = (image, rng.integers(0, 36, RAW).astype(np.uint8))
    return out


@pytest.fixture
def split(tmp_path: Path) -> Path:
    return write_split(tmp_path / "split", [1, 2, 3], [4], [5], PAIRS)


@pytest.fixture
def tar(tmp_path: Path) -> Path:
    return make_oasis_tar(tmp_path / "neurite-oasis.v1.0.tar", _volumes(), order=SUBJECTS)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _prepare(out: Path, split: Path, **kwargs: object):
    return prepare_oasis(out, split_dir=split, expected_shape=RAS, progress=False, **kwargs)


def test_download_and_prepare_writes_the_split(tmp_path: Path, tar: Path, split: Path) -> None:
    out = tmp_path / "oasis"
    md5 = _md5(tar)
    with FileServer({"/data/neurite-oasis.v1.0.tar": tar.read_bytes()}) as server:
        url = server.url("/data/neurite-oasis.v1.0.tar")
        result = _prepare(out, split, url=url, md5=md5)
    assert result.created and result.n_images == 5 and result.dataset_json == out / "dataset.json"
    assert (out / "downloads" / "neurite-oasis.v1.0.tar").read_bytes() == tar.read_bytes()
    assert not (out / "downloads" / "extract").exists()

    raw = json.loads((out / "dataset.json").read_text())
    img, seg = "./images/img{}.nii.gz", "./labels/seg{}.nii.gz"
    assert raw["training"] == [
        {"image": img.format(i), "label": seg.format(i)} for i in ("0001", "0002", "0003")
    ]
    assert raw["images"] == [{"image": img.format(i), "label": seg.format(i)} for i in ("0004", "0005")]
    assert raw["validation"] == [{"fixed": img.format("0004"), "moving": img.format("0001")}]
    for key, name in (("test", "test_200"), ("test_100", "test_100"), ("test_020", "test_020")):
        expected = [
            {"fixed": img.format(f"{f:04d}"), "moving": img.format(f"{m:04d}")} for f, m in PAIRS[name]
        ]
        assert raw[key] == expected
    assert raw["tensorImageShape"] == {"0": list(RAS)} and raw["spacing"] == [1.0, 1.0, 1.0]
    assert raw["labels"] == {str(i): f"Structure-{i}" for i in range(1, 36)}
    assert raw["source"] == {"url": url, "archive": "neurite-oasis.v1.0.tar", "md5": md5}
    assert raw["subjects"] == {f"{r:04d}": s for r, s in enumerate(sorted(SUBJECTS), 1)}

    # Subject -> id by sorted rank: img000r holds r/10 (the subjects.txt order was shuffled).
    for rank in range(1, 6):
        data = nib.load(out / "images" / f"img{rank:04d}.nii.gz").get_fdata(dtype=np.float32)
        assert data.dtype == np.float32 and data.shape == RAS
        assert np.count_nonzero(data == np.float32(rank / 10)) == data.size - 1

    ds = Dataset.load(out / "dataset.json")
    pair = ds.pairs("test")[2]
    assert (pair.fixed.id, pair.moving.id, pair.disp_name) == ("0005", "0002", "disp_0005_0002.nii.gz")
    assert pair.fixed.label == out / "labels" / "seg0005.nii.gz" and pair.moving.label.is_file()
    assert ds.labels == list(range(1, 36)) and [r.id for r in ds.training] == ["0001", "0002", "0003"]


def test_lia_to_ras_moves_the_marker_and_keeps_world_positions(
    tmp_path: Path, tar: Path, split: Path
) -> None:
    out = tmp_path / "oasis"
    _prepare(out, split, archive=tar, md5=None)
    vols = _volumes()
    x, y, _ = RAW
    i, j, k = MARKER
    expected_ras = (x - 1 - i, k, y - 1 - j)  # transpose (0,2,1), flip axis 0, flip axis 2, by hand
    nii = nib.load(out / "images" / "img0002.nii.gz")
    data = np.asarray(nii.dataobj)
    assert np.argwhere(data == 1.0).tolist() == [list(expected_ras)]
    assert nib.aff2axcodes(nii.affine) == ("R", "A", "S")
    world_before = lia_affine(RAW) @ np.array([*MARKER, 1.0])
    np.testing.assert_allclose(nii.affine @ np.array([*expected_ras, 1.0]), world_before)
    seg_nii = nib.load(out / "labels" / "seg0002.nii.gz")
    seg_raw = vols["OASIS_OAS1_0003_MR1"][1]
    np.testing.assert_array_equal(np.asarray(seg_nii.dataobj), np.flip(seg_raw.transpose(0, 2, 1), (0, 2)))
    assert seg_nii.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg_nii.affine, nii.affine)


def test_rerun_is_a_no_op_and_a_damaged_folder_is_prepared_again(
    tmp_path: Path, tar: Path, split: Path
) -> None:
    out = tmp_path / "oasis"
    _prepare(out, split, archive=tar, md5=_md5(tar))
    files = sorted(p for p in out.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = _prepare(out, split, archive=tar, md5=_md5(tar), verify=True)
    assert not again.created and again.n_images == 5
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    (out / "images" / "img0003.nii.gz").unlink()
    assert _prepare(out, split, archive=tar, md5=None).created
    assert (out / "images" / "img0003.nii.gz").is_file()


def test_prepared_folder_refuses_another_archive_or_split(tmp_path: Path, tar: Path, split: Path) -> None:
    out = tmp_path / "oasis"
    _prepare(out, split, archive=tar, md5=_md5(tar))
    with pytest.raises(UserError, match=f"already prepared from an archive with md5 {_md5(tar)}"):
        _prepare(out, split, archive=tar, md5="f" * 32)
    other = write_split(tmp_path / "split2", [1, 2, 4], [3], [5], PAIRS)
    with pytest.raises(UserError, match="different split"):
        _prepare(out, other, archive=tar, md5=None)


def test_cli_archive_md5_checked_by_default(tmp_path: Path, tar: Path, split: Path, capsys) -> None:
    args = [
        "data",
        "oasis",
        "--archive",
        str(tar),
        "--split-dir",
        str(split),
        "--expected-shape",
        *map(str, RAS),
    ]
    assert main([*args, "--out", str(tmp_path / "a"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"expected {OASIS_MD5}" in err and f"got {_md5(tar)}" in err
    assert not (tmp_path / "a" / "dataset.json").exists()
    assert main([*args, "--out", str(tmp_path / "b"), "--md5", "none", "--no-progress"]) == 0
    assert "OASIS prepared: 5 images" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b"), "--md5", _md5(tar), "--no-progress"]) == 0
    assert "already prepared" in capsys.readouterr().out


def test_truncated_archive_is_a_clear_error(tmp_path: Path, tar: Path, split: Path) -> None:
    with tarfile.open(tar) as tf:
        member = tf.getmember("OASIS_OAS1_0010_MR1/aligned_seg35.nii.gz")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[: member.offset_data + member.size // 2])
    with pytest.raises(UserError, match=r"cut\.tar: cannot read the tar archive.*truncated"):
        _prepare(tmp_path / "oasis", split, archive=cut, md5=None)
    assert not (tmp_path / "oasis" / "dataset.json").exists()
    assert not (
        tmp_path / "oasis" / "downloads" / "extract" / "OASIS_OAS1_0010_MR1" / "aligned_seg35.nii.gz"
    ).exists()


def test_missing_subject_files_are_named(tmp_path: Path, split: Path) -> None:
    omit = ["OASIS_OAS1_0010_MR1/aligned_seg35.nii.gz", "OASIS_OAS1_0100_MR1/aligned_norm.nii.gz"]
    tar = make_oasis_tar(tmp_path / "t.tar", _volumes(), order=SUBJECTS, omit=omit)
    with pytest.raises(UserError) as err:
        _prepare(tmp_path / "oasis", split, archive=tar, md5=None)
    assert "missing subject file(s)" in str(err.value) and all(o in str(err.value) for o in omit)


def test_unsafe_member_names_are_refused(tmp_path: Path, split: Path) -> None:
    tar = make_oasis_tar(tmp_path / "t.tar", _volumes(), extra={"../evil/aligned_norm.nii.gz": b"x"})
    with pytest.raises(
        UserError, match=re.escape("unsafe or unexpected member name '../evil/aligned_norm.nii.gz'")
    ):
        _prepare(tmp_path / "oasis", split, archive=tar, md5=None)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "oasis" / "evil").exists()


def test_archive_and_split_must_agree(tmp_path: Path, tar: Path) -> None:
    six = write_split(tmp_path / "six", [1, 2, 3], [4], [5, 6], PAIRS)
    with pytest.raises(UserError, match=r"lists 5 subjects.*covers ids 0001\.\.0006"):
        _prepare(tmp_path / "oasis", six, archive=tar, md5=None)


def test_wrong_shape_and_orientation_are_refused(tmp_path: Path, tar: Path, split: Path) -> None:
    with pytest.raises(UserError, match=r"after LIA→RAS; expected \(160, 224, 192\)"):
        prepare_oasis(tmp_path / "a", archive=tar, md5=None, split_dir=split, progress=False)
    ras = tmp_path / "ras.tar"
    with tarfile.open(tar) as src, tarfile.open(ras, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".nii.gz") and "orig" not in member.name:
                img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
                data = gzip.compress(nib.Nifti1Image(np.asanyarray(img.dataobj), np.eye(4)).to_bytes())
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(UserError, match="orientation RAS, expected LIA"):
        _prepare(tmp_path / "b", split, archive=ras, md5=None)


def test_without_colour_table_labels_are_numbered(tmp_path: Path, split: Path) -> None:
    tar = make_oasis_tar(tmp_path / "t.tar", _volumes(), lut=False)
    _prepare(tmp_path / "oasis", split, archive=tar, md5=None)
    labels = json.loads((tmp_path / "oasis" / "dataset.json").read_text())["labels"]
    assert labels == {str(i): f"label_{i}" for i in range(1, 36)}


def test_shipped_paper_split_matches_the_authors_dataset_json() -> None:
    split = read_split(SPLIT_DIR)
    assert (len(split.train), len(split.val), len(split.test)) == (300, 30, 84)
    assert {k: len(v) for k, v in split.pairs.items()} == {"validation": 30, "test": 200, "test_100": 100,
                                                             "test_020": 20}  # fmt: skip
    assert sorted(split.train + split.val + split.test) == [f"{i:04d}" for i in range(1, 415)]
    test200 = split.pairs["test"]
    assert len({(m, f) for f, m in test200} & set(test200)) == 6  # 3 pairs in both directions
    assert set(split.pairs["test_100"]) <= set(test200) and set(split.pairs["test_020"]) <= set(
        split.pairs["test_100"]
    )
    # Independent source: the authors' own dataset.json (configs/dataset_split/OASIS_v1).
    authors = json.loads((SPLIT_DIR / "dataset.json").read_text())

    def ids(entries: list[dict], *keys: str) -> list[tuple[str, ...]]:
        return [tuple(Path(e[k]).name[3:7] for k in keys) for e in entries]

    assert [i for (i,) in ids(authors["training"], "image")] == split.train
    for key, name in (("validation", "validation"), ("test", "test_200"), ("test_100", "test_100"),
                      ("test_020", "test_020")):  # fmt: skip
        assert ids(authors[name], "fixed", "moving") == split.pairs[key]
