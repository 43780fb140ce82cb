"""Downloads, checksums and completion manifests shared by the dataset preparers (OASIS, LUMIR).

- :func:`download` fetches one HTTP(S) file into ``DEST.part``, resumes an interrupted transfer with an
  HTTP ``Range`` request (starting over cleanly when the server ignores the range and answers 200),
  shows a tqdm progress bar, verifies md5 / sha256 and only then renames the ``.part`` file to ``DEST``.
  A file with the final name therefore always has verified content; a download whose checksum does
  not match is renamed ``DEST.corrupt`` and reported with both sums.
- :func:`file_digest` / :func:`verify_file` hash large files in chunks.
- A prepared dataset folder ends with ``manifest.json`` (written last, atomically): every file it
  produced with its size and a checksum. :func:`read_manifest` + :func:`manifest_problems` tell a
  complete folder (nothing to do) from a partial or damaged one (prepare again).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from dirbench import __version__
from dirbench.errors import UserError
from dirbench.io import atomic_path

__all__ = [
    "MANIFEST_NAME",
    "Prepared",
    "check_digest",
    "download",
    "file_crc32",
    "file_digest",
    "manifest_problems",
    "prepared_manifest",
    "read_json",
    "read_manifest",
    "verify_file",
    "write_json",
    "write_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 22  # 4 MiB
_HEX_LEN = {"md5": 32, "sha256": 64}


@dataclass(frozen=True)
class Prepared:
    """What a preparer did: the ``dataset.json`` it wrote (or found) and whether it wrote anything."""

    dataset_json: Path
    created: bool
    n_images: int


class _Interrupted(Exception):
    """A transfer that stopped early (network error, dropped connection); it may be resumed."""


# --------------------------------------------------------------------------- checksums


def check_digest(value: str, algo: str) -> str:
    """Normalise a user-given hex digest (lower case) and check its length; raises UserError."""
    text = value.strip().lower()
    if not re.fullmatch(rf"[0-9a-f]{{{_HEX_LEN[algo]}}}", text):
        raise UserError(f"{value!r} is not an {algo} checksum ({_HEX_LEN[algo]} hexadecimal digits)")
    return text


def _chunks(path: Path, progress: bool, desc: str) -> Iterator[bytes]:
    size = path.stat().st_size
    with (
        open(path, "rb") as fh,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        while chunk := fh.read(_CHUNK):
            bar.update(len(chunk))
            yield chunk


def file_digest(path: str | os.PathLike, algo: str = "sha256", progress: bool = False) -> str:
    """The hex digest (``md5`` or ``sha256``) of a file, read in 4 MiB chunks."""
    path = Path(path)
    h = hashlib.new(algo)
    for chunk in _chunks(path, progress, f"{algo} {path.name}"):
        h.update(chunk)
    return h.hexdigest()


def file_crc32(path: str | os.PathLike) -> int:
    """The CRC-32 of a file (as stored in zip archives), read in 4 MiB chunks."""
    crc = 0
    for chunk in _chunks(Path(path), False, ""):
        crc = zlib.crc32(chunk, crc)
    return crc


def verify_file(
    path: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    quarantine: bool = False,
    progress: bool = False,
) -> None:
    """Check ``path`` against the given md5 / sha256 (either may be None); raise UserError on mismatch.

    The error names the file, the expected and the actual sum. With ``quarantine`` the file is renamed
    ``<name>.corrupt`` first (a trailing ``.part`` is dropped), so nothing that looks valid remains.
    """
    path = Path(path)
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        expected = check_digest(expected, algo)
        actual = file_digest(path, algo, progress=progress)
        if actual != expected:
            where = ""
            if quarantine:
                bad = path.with_name(path.name.removesuffix(".part") + ".corrupt")
                os.replace(path, bad)
                where = f"; the file was kept as {bad} (delete it or check the expected sum)"
            raise UserError(f"{path}: {algo} mismatch: expected {expected}, got {actual}{where}")


# --------------------------------------------------------------------------- HTTP download


def _total_from_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` or ``bytes */TOTAL`` → (START, TOTAL); unknown parts are None."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _copy_stream(resp: BinaryIO, fh: BinaryIO, bar: tqdm, part: Path) -> None:
    while True:
        try:
            chunk = resp.read(_CHUNK)
        except (http.client.HTTPException, OSError) as err:  # IncompleteRead, reset, timeout
            raise _Interrupted(f"connection lost: {err!r}") from None
        if not chunk:
            return
        try:
            fh.write(chunk)
        except OSError as err:
            raise UserError(f"{part}: cannot write the download: {err}") from None
        bar.update(len(chunk))


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One attempt: continue ``part`` from its current size; raises _Interrupted if it stops early."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"dirbench/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            _, total = _total_from_content_range(err.headers.get("Content-Range"))
            if total == offset:  # the .part file already holds the whole file
                return
            part.unlink()
            raise _Interrupted(f"the server refused to resume at byte {offset}; starting over") from None
        raise UserError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _Interrupted(f"cannot connect: {getattr(err, 'reason', err)!r}") from None
    with resp:
        start, total = _total_from_content_range(resp.headers.get("Content-Range"))
        if resp.status == 206:
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted(f"the server sent bytes from {start}, not {offset}; starting over")
            mode = "ab"
        elif resp.status == 200:  # no range asked, or the server ignored it: start over from byte 0
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        else:
            raise UserError(f"{url}: unexpected HTTP status {resp.status}")
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            _copy_stream(resp, fh, bar, part)
            fh.flush()
            os.fsync(fh.fileno())
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Interrupted(f"connection closed at byte {size} of {total}")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` with resume, progress bar and checksum verification.

    Args:
        url: an ``http://`` or ``https://`` address.
        dest: the final file. While downloading, data goes to ``dest.part``; an existing ``.part``
            file is continued with ``Range: bytes=N-``. A server that answers 200 (ignoring the range)
            makes the download start over from byte 0.
        md5, sha256: expected hex digests (None: not checked). On mismatch the ``.part`` file is
            renamed ``dest.corrupt`` and UserError names the expected and actual sums.
        retries: further attempts after an interruption within this call (each resumes); after the last,
            UserError says that running again resumes.
        retry_wait: seconds before retry k is ``retry_wait * k``.
        timeout: socket timeout in seconds.
        progress: show a tqdm bar on stderr.

    Returns:
        ``dest``. An existing ``dest`` is verified (same rules) and returned without downloading.
    """
    dest = Path(dest)
    if not url.startswith(("http://", "https://")):
        raise UserError(f"{url!r}: only http:// and https:// addresses can be downloaded")
    if dest.is_file():
        verify_file(dest, md5=md5, sha256=sha256, quarantine=True, progress=progress)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout, progress)
            break
        except _Interrupted as err:
            if attempt == retries:
                kept = f"; the partial file {part} was kept: run again to resume" if part.exists() else ""
                msg = f"{url}: download failed after {retries + 1} attempt(s) ({err}){kept}"
                raise UserError(msg) from None
            log.warning("%s: %s; retrying (%d/%d)", url, err, attempt + 1, retries)
            time.sleep(retry_wait * (attempt + 1))
    verify_file(part, md5=md5, sha256=sha256, quarantine=True, progress=progress)
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- JSON and manifests


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; UserError naming the file if it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not valid JSON: {err}") from None


def write_manifest(root: Path, files: dict[str, dict[str, Any]], **info: Any) -> None:
    """Write ``root/manifest.json``: ``info`` fields plus ``files`` {relative path: {size, sha256|crc32}}.

    Call it last: its presence marks the folder as completely prepared.
    """
    write_json(root / MANIFEST_NAME, {**info, "files": files})


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of a prepared folder, or None when there is none (or it cannot be read)."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.warning("%s: unreadable; the folder will be prepared again", path)
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def manifest_problems(root: Path, manifest: dict[str, Any], *, full: bool = False) -> list[str]:
    """Files of ``manifest`` that are missing or changed (size; with ``full`` also sha256 / CRC-32)."""
    problems = []
    for rel, meta in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel} (missing)")
        elif path.stat().st_size != meta.get("size"):
            problems.append(f"{rel} (size changed)")
        elif full and "sha256" in meta and file_digest(path) != meta["sha256"]:
            problems.append(f"{rel} (sha256 changed)")
        elif full and "crc32" in meta and file_crc32(path) != meta["crc32"]:
            problems.append(f"{rel} (CRC-32 changed)")
    return problems


def prepared_manifest(root: Path, *, full: bool = False) -> dict[str, Any] | None:
    """The manifest of ``root`` if the folder is completely prepared and intact, else None.

    A manifest whose files are missing or changed is removed (with a warning naming them), so the
    caller prepares the folder again and a crash never leaves a manifest claiming it is done.
    """
    manifest = read_manifest(root)
    if manifest is None:
        return None
    problems = manifest_problems(root, manifest, full=full)
    if problems:
        shown = ", ".join(problems[:5]) + (f" and {len(problems) - 5} more" if len(problems) > 5 else "")
        log.warning("%s: %s; preparing again", root / MANIFEST_NAME, shown)
        (root / MANIFEST_NAME).unlink()
        return None
    return manifest
