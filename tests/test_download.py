"""dirbench.data.download against a real HTTP server on 127.0.0.1 (Range, drops, checksums, manifests)."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import pytest
from dirbench.data.download import (
    MANIFEST_NAME,
    check_digest,
    download,
    file_crc32,
    file_digest,
    manifest_problems,
    prepared_manifest,
    write_manifest,
)
from dirbench.errors import UserError
from http_fixtures import FileServer

PAYLOAD = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def _get(dest: Path, server: FileServer, **kwargs: object) -> Path:
    return download(server.url("/data.tar"), dest, progress=False, retry_wait=0, **kwargs)


def test_download_verifies_and_finalises(tmp_path: Path) -> None:
    dest = tmp_path / "dl" / "data.tar"
    with FileServer({"/data.tar": PAYLOAD}) as server:
        assert _get(dest, server, md5=MD5, sha256=SHA256) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.tar.part").exists()
    assert [(r.range, r.status) for r in server.requests] == [(None, 200)]


def test_interrupted_download_resumes_with_range_on_next_run(tmp_path: Path) -> None:
    dest = tmp_path / "data.tar"
    part = tmp_path / "data.tar.part"
    with FileServer({"/data.tar": PAYLOAD}, drop_after=120_000) as server:
        with pytest.raises(UserError, match=r"failed after 1 attempt.*run again to resume"):
            _get(dest, server, md5=MD5, retries=0)
        assert not dest.exists()
        assert part.read_bytes() == PAYLOAD[:120_000]
        _get(dest, server, md5=MD5, retries=0)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), ("bytes=120000-", 206)]


def test_interrupted_download_retries_within_one_call(tmp_path: Path) -> None:
    dest = tmp_path / "data.tar"
    with FileServer({"/data.tar": PAYLOAD}, drop_after=50_000) as server:
        _get(dest, server, sha256=SHA256, retries=2)
    assert dest.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == [None, "bytes=50000-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path) -> None:
    dest = tmp_path / "data.tar"
    (tmp_path / "data.tar.part").write_bytes(b"\xff" * 70_000)  # a stale prefix that does not match
    with FileServer({"/data.tar": PAYLOAD}, ignore_range=True) as server:
        _get(dest, server, md5=MD5)
    assert [(r.range, r.status) for r in server.requests] == [("bytes=70000-", 200)]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_answered_416_is_finalised(tmp_path: Path) -> None:
    dest = tmp_path / "data.tar"
    (tmp_path / "data.tar.part").write_bytes(PAYLOAD)
    with FileServer({"/data.tar": PAYLOAD}) as server:
        _get(dest, server, md5=MD5)
    assert [(r.range, r.status) for r in server.requests] == [(f"bytes={len(PAYLOAD)}-", 416)]
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("algo", ["md5", "sha256"])
def test_checksum_mismatch_names_both_sums_and_leaves_no_final_file(tmp_path: Path, algo: str) -> None:
    dest = tmp_path / "data.tar"
    wrong = "0" * (32 if algo == "md5" else 64)
    actual = hashlib.new(algo, PAYLOAD).hexdigest()
    with FileServer({"/data.tar": PAYLOAD}) as server, pytest.raises(UserError) as err:
        _get(dest, server, **{algo: wrong})
    assert f"expected {wrong}" in str(err.value) and f"got {actual}" in str(err.value)
    assert not dest.exists() and not (tmp_path / "data.tar.part").exists()
    assert (tmp_path / "data.tar.corrupt").read_bytes() == PAYLOAD


def test_existing_file_is_verified_without_a_request(tmp_path: Path) -> None:
    dest = tmp_path / "data.tar"
    dest.write_bytes(PAYLOAD)
    with FileServer({"/data.tar": PAYLOAD}) as server:
        _get(dest, server, md5=MD5)
        assert server.requests == []
        dest.write_bytes(PAYLOAD[:-1] + b"x")
        with pytest.raises(UserError, match=f"expected {MD5}"):
            _get(dest, server, md5=MD5)
    assert not dest.exists() and (tmp_path / "data.tar.corrupt").exists()


def test_http_error_and_bad_scheme(tmp_path: Path) -> None:
    with FileServer({}) as server, pytest.raises(UserError, match="HTTP 404"):
        download(server.url("/missing.tar"), tmp_path / "x.tar", progress=False, retries=0)
    with pytest.raises(UserError, match="only http"):
        download("ftp://example.org/x.tar", tmp_path / "x.tar")


def test_check_digest() -> None:
    assert check_digest(" " + MD5.upper() + "\n", "md5") == MD5
    with pytest.raises(UserError, match="not an sha256"):
        check_digest(MD5, "sha256")


def test_digests_match_hashlib_and_zlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD * 20)  # 6 MB: more than one 4 MiB chunk
    assert file_digest(path, "md5") == hashlib.md5(PAYLOAD * 20).hexdigest()
    assert file_crc32(path) == zlib.crc32(PAYLOAD * 20)


def test_manifest_detects_missing_and_changed_files(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abcd")
    (tmp_path / "b.bin").write_bytes(b"efgh")
    write_manifest(
        tmp_path,
        {
            "a.bin": {"size": 4, "sha256": hashlib.sha256(b"abcd").hexdigest()},
            "b.bin": {"size": 4, "crc32": zlib.crc32(b"efgh")},
        },
        dataset="T",
    )
    manifest = prepared_manifest(tmp_path, full=True)
    assert manifest is not None and manifest["dataset"] == "T"
    (tmp_path / "a.bin").write_bytes(b"abcX")  # same size: only a full check sees it
    (tmp_path / "b.bin").write_bytes(b"efgX")
    assert manifest_problems(tmp_path, manifest) == []
    assert manifest_problems(tmp_path, manifest, full=True) == [
        "a.bin (sha256 changed)",
        "b.bin (CRC-32 changed)",
    ]
    (tmp_path / "b.bin").unlink()
    assert manifest_problems(tmp_path, manifest) == ["b.bin (missing)"]
    assert prepared_manifest(tmp_path) is None
    assert not (tmp_path / MANIFEST_NAME).exists()  # a damaged folder no longer claims to be prepared
