"""``dirbench data lumir`` on a tiny LUMIR-like zip with the official json (training list reduced)."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dirbench.cli import main
from dirbench.data.lumir import DATASET_JSON, LUMIR_ZIP_ID, LUMIR_ZIP_NAME, prepare_lumir
from dirbench.dataset import Dataset
from dirbench.errors import UserError
from http_fixtures import lumir_official_json, make_lumir_zip

SHAPE = (4, 5, 6)
N_TRAIN = 5


@pytest.fixture
def official(tmp_path: Path) -> Path:
    path = tmp_path / "LUMIR_dataset.json"
    path.write_text(json.dumps(lumir_official_json(DATASET_JSON, N_TRAIN), indent=4))
    return path


@pytest.fixture
def archive(tmp_path: Path, official: Path) -> Path:
    return make_lumir_zip(tmp_path / LUMIR_ZIP_NAME, json.loads(official.read_text()), SHAPE)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepare(out: Path, official: Path, **kwargs: object):
    return prepare_lumir(out, dataset_json=official, expected_shape=SHAPE, progress=False, **kwargs)


def test_prepare_from_zip(tmp_path: Path, official: Path, archive: Path) -> None:
    out = tmp_path / "lumir"
    result = _prepare(out, official, archive=archive)
    assert result.created and result.n_images == N_TRAIN + 40
    ref = json.loads(official.read_text())
    raw = json.loads((out / "dataset.json").read_text())
    assert (
        raw["training"]
        == ref["training"]
        == [{"image": f"./imagesTr/LUMIRMRI_{i:04d}_0000.nii.gz"} for i in range(N_TRAIN)]
    )
    assert raw["images"] == [{"image": f"./imagesVal/LUMIRMRI_{i}_0000.nii.gz"} for i in range(3454, 3494)]
    assert raw["validation"] == ref["validation"] and len(raw["validation"]) == 38
    num = re.compile(r"\./imagesVal/LUMIRMRI_(\d{4})_0000\.nii\.gz")
    fixed_moving = [
        (int(num.fullmatch(p["fixed"])[1]), int(num.fullmatch(p["moving"])[1])) for p in raw["validation"]
    ]
    assert fixed_moving == [(k + 1, k) for k in [*range(3454, 3483), *range(3484, 3493)]]  # spec §7.1
    assert raw["intensity_scale"] == 1 / 255 and raw["labels"] == {}
    assert raw["tensorImageShape"] == {"0": list(SHAPE)} and raw["spacing"] == [1.0, 1.0, 1.0]
    assert "CC BY 4.0" in raw["license"]
    assert raw["source"]["sha256"] == _sha(archive) and raw["source"]["drive_id"] is None

    checks = json.loads((out / "checksums.json").read_text())
    assert checks["archive"]["sha256"] == _sha(archive)
    assert checks["dataset_json"]["sha256"] == _sha(official)
    with zipfile.ZipFile(archive) as zf:  # files are kept byte for byte
        for name in ("imagesTr/LUMIRMRI_0003_0000.nii.gz", "imagesVal/LUMIRMRI_3490_0000.nii.gz"):
            assert (out / name).read_bytes() == zf.read(f"LUMIR_L2R24_TrainVal/{name}")
    assert not (out / "README.txt").exists() and not (out / "LUMIR_L2R24_TrainVal").exists()

    ds = Dataset.load(out / "dataset.json")
    pairs = ds.pairs("validation")
    assert len(pairs) == 38 and pairs[0].disp_name == "disp_3455_3454.nii.gz"
    assert all(p.fixed.image.is_file() and p.moving.image.is_file() for p in pairs)


def test_rerun_is_a_no_op_and_the_recorded_sha256_is_enforced(
    tmp_path: Path, official: Path, archive: Path
) -> None:
    out = tmp_path / "lumir"
    _prepare(out, official, archive=archive)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = _prepare(out, official, archive=archive, verify=True)
    assert not again.created and again.n_images == N_TRAIN + 40
    assert {p: p.stat().st_mtime_ns for p in sorted(p for p in out.rglob("*") if p.is_file())} == mtimes

    recorded = _sha(archive)
    ref = json.loads(official.read_text())
    ref["training"] = ref["training"][:2]
    make_lumir_zip(archive, ref, SHAPE)  # another zip at the same path
    with pytest.raises(UserError) as err:
        _prepare(out, official, archive=archive)
    assert f"expected {recorded}" in str(err.value) and f"got {_sha(archive)}" in str(err.value)

    old_json = _sha(official)
    official.write_text(official.read_text() + "\n")
    with pytest.raises(UserError, match=f"sha256 mismatch: expected {old_json} .*, got {_sha(official)}"):
        _prepare(out, official, archive=archive)


def test_sha256_pin(tmp_path: Path, official: Path, archive: Path, capsys) -> None:
    args = ["data", "lumir", "--archive", str(archive), "--dataset-json", str(official), "--no-progress"]
    args += ["--expected-shape", *map(str, SHAPE)]
    assert main([*args, "--out", str(tmp_path / "a"), "--sha256", "ab" * 32]) == 1
    err = capsys.readouterr().err
    assert f"expected {'ab' * 32} (--sha256), got {_sha(archive)}" in err
    assert not (tmp_path / "a" / "dataset.json").exists()
    assert main([*args, "--out", str(tmp_path / "b"), "--sha256", _sha(archive).upper()]) == 0
    assert f"LUMIR prepared: {N_TRAIN + 40} images" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "already prepared" in capsys.readouterr().out


def test_extraction_resumes_and_verify_replaces_damaged_files(
    tmp_path: Path, official: Path, archive: Path
) -> None:
    out = tmp_path / "lumir"
    kept, damaged = (
        out / "imagesTr" / "LUMIRMRI_0001_0000.nii.gz",
        out / "imagesTr" / "LUMIRMRI_0002_0000.nii.gz",
    )
    with zipfile.ZipFile(archive) as zf:
        good = zf.read("LUMIR_L2R24_TrainVal/imagesTr/LUMIRMRI_0001_0000.nii.gz")
        size2 = zf.getinfo("LUMIR_L2R24_TrainVal/imagesTr/LUMIRMRI_0002_0000.nii.gz").file_size
    kept.parent.mkdir(parents=True)
    kept.write_bytes(good)
    damaged.write_bytes(b"\0" * size2)  # right size, wrong content: only a CRC check notices
    mtime = kept.stat().st_mtime_ns
    _prepare(out, official, archive=archive, verify=True)
    assert kept.stat().st_mtime_ns == mtime
    with zipfile.ZipFile(archive) as zf:
        assert damaged.read_bytes() == zf.read("LUMIR_L2R24_TrainVal/imagesTr/LUMIRMRI_0002_0000.nii.gz")


def test_gdown_missing_or_failing_explains_the_manual_drop_in(
    tmp_path: Path, official: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    with pytest.raises(UserError, match=r"gdown is not installed.*--archive PATH"):
        _prepare(tmp_path / "a", official)

    def quota(**kwargs: object) -> str:
        raise RuntimeError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=quota))
    with pytest.raises(UserError, match=r"Too many users.*--archive PATH"):
        _prepare(tmp_path / "b", official)

    def html(*, id: str, output: str, quiet: bool, resume: bool) -> str:
        Path(output).write_text("<html>quota exceeded</html>")
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=html))
    with pytest.raises(UserError, match="not a zip"):
        _prepare(tmp_path / "c", official)
    assert not list((tmp_path / "c" / "downloads").iterdir())


def test_gdown_download_path(
    tmp_path: Path, official: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake(*, id: str, output: str, quiet: bool, resume: bool) -> str:
        calls.append((id, Path(output).name, resume))
        Path(output).write_bytes(archive.read_bytes())
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fake))
    out = tmp_path / "lumir"
    _prepare(out, official)
    assert calls == [(LUMIR_ZIP_ID, f"{LUMIR_ZIP_NAME}.part", True)]
    assert (out / "downloads" / LUMIR_ZIP_NAME).read_bytes() == archive.read_bytes()
    assert json.loads((out / "dataset.json").read_text())["source"]["drive_id"] == LUMIR_ZIP_ID
    _prepare(out, official)  # prepared: gdown is not called again
    assert len(calls) == 1


def test_bad_inputs_are_clear_errors(tmp_path: Path, official: Path, archive: Path) -> None:
    missing = make_lumir_zip(tmp_path / "m.zip", json.loads(official.read_text()), SHAPE,
                             omit=["imagesTr/LUMIRMRI_0004_0000.nii.gz"])  # fmt: skip
    with pytest.raises(UserError, match=r"missing image\(s\).*imagesTr/LUMIRMRI_0004_0000\.nii\.gz"):
        _prepare(tmp_path / "a", official, archive=missing)

    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match=r"cut\.zip: cannot read the zip archive"):
        _prepare(tmp_path / "b", official, archive=cut)

    with pytest.raises(UserError, match=re.escape("shape (4, 5, 6), expected (160, 224, 192)")):
        prepare_lumir(tmp_path / "c", archive=archive, dataset_json=official, progress=False)

    evil = json.loads(official.read_text())
    evil["training"][0]["image"] = "./imagesTr/../../evil.nii.gz"
    bad_json = tmp_path / "evil.json"
    bad_json.write_text(json.dumps(evil))
    with pytest.raises(UserError, match="unexpected image path"):
        _prepare(tmp_path / "d", bad_json, archive=archive)

    with pytest.raises(UserError, match=r"nope\.zip: archive not found"):
        _prepare(tmp_path / "e", official, archive=tmp_path / "nope.zip")


def test_shipped_official_json_counts() -> None:
    raw = json.loads(DATASET_JSON.read_text())
    assert len(raw["training"]) == raw["numTraining"] == 3384
    assert len(raw["validation"]) == raw["numValidation"] == 38
    assert np.unique([p[s] for p in raw["validation"] for s in ("fixed", "moving")]).size == 40
