"""Test helpers: a local HTTP file server with Range support, and tiny neurite-OASIS / LUMIR archives.

The server binds 127.0.0.1 on a free port (stdlib ``ThreadingHTTPServer`` in a thread). It answers
``Range: bytes=N-`` / ``bytes=N-M`` with 206 and ``Content-Range``, records every request, and has
two switches: ``drop_after`` (send the full ``Content-Length`` header but close the connection after
that many body bytes, once) and ``ignore_range`` (answer 200 with the whole file even to range requests).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np


def lia_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """The neurite-OASIS LIA affine for a volume of ``shape`` (160x192x224 gives the release's affine)."""
    x, y, z = shape
    return np.array([[-1, 0, 0, x / 2], [0, 0, 1, -z / 2], [0, -1, 0, y / 2], [0, 0, 0, 1]], dtype=float)


def nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file of ``data`` as bytes."""
    return gzip.compress(nib.Nifti1Image(data, affine).to_bytes(), compresslevel=1)


@dataclass
class Request:
    path: str
    range: str | None
    status: int


@dataclass
class FileServer:
    """Serves ``files`` {url path: bytes} on 127.0.0.1; use as a context manager."""

    files: dict[str, bytes]
    drop_after: int | None = None
    ignore_range: bool = False
    requests: list[Request] = field(default_factory=list)

    def __enter__(self) -> FileServer:
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                data = server_self.files.get(self.path)
                rng = self.headers.get("Range")
                if data is None:
                    server_self.requests.append(Request(self.path, rng, 404))
                    self.send_error(404)
                    return
                start, end, status = 0, len(data) - 1, 200
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                if match and not server_self.ignore_range:
                    start = int(match.group(1))
                    end = int(match.group(2)) if match.group(2) else len(data) - 1
                    if start >= len(data):
                        server_self.requests.append(Request(self.path, rng, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                server_self.requests.append(Request(self.path, rng, status))
                body = data[start : end + 1]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if server_self.drop_after is not None:
                    cut, server_self.drop_after = server_self.drop_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"


# --------------------------------------------------------------------------- archives


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


SEG35_LUT = "\n".join(
    ["#$Id: neurite seg35 colortable (test copy)", "", "  0  Unknown  0 0 0 0"]
    + [f"  {i:d}  Structure-{i:d}  {i} {2 * i} {3 * i} 0" for i in range(1, 36)]
)


def make_oasis_tar(
    path: Path,
    subjects: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    order: Iterable[str] | None = None,
    omit: Iterable[str] = (),
    extra: dict[str, bytes] | None = None,
    lut: bool = True,
) -> Path:
    """A tar laid out like neurite-oasis v1.0: ``OASIS_OAS1_XXXX_MR1/aligned_{norm,seg35}.nii.gz``,
    ``subjects.txt`` (in ``order``, default as given), ``seg35_labels.txt`` and decoy files.

    ``subjects`` maps a folder name to (image, seg) LIA arrays; member paths in ``omit`` are left out.
    """
    omit = set(omit)
    with tarfile.open(path, "w") as tar:
        names = list(order) if order is not None else list(subjects)
        _add(tar, "subjects.txt", ("\n".join(names) + "\n").encode())
        if lut:
            _add(tar, "seg35_labels.txt", SEG35_LUT.encode())
        for name, (image, seg) in subjects.items():
            affine = lia_affine(image.shape)
            for fname, data in (
                ("aligned_norm.nii.gz", nifti_bytes(image.astype(np.float32), affine)),
                ("aligned_seg35.nii.gz", nifti_bytes(seg.astype(np.uint8), affine)),
                ("aligned_orig.nii.gz", b"decoy: not extracted"),
            ):
                if f"{name}/{fname}" not in omit:
                    _add(tar, f"{name}/{fname}", data)
        for name, data in (extra or {}).items():
            _add(tar, name, data)
    return path


def write_split(
    folder: Path, train: list[int], val: list[int], test: list[int], pairs: dict[str, list]
) -> Path:
    """A split folder in the paper's format: ``list_*.txt`` ids and ``pair_*.txt`` "(fixed, moving)" lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("val", val), ("test", test)):
        (folder / f"list_{name}.txt").write_text("".join(f"{i:04d}\n" for i in ids))
    header = (
        "# In each pair, the fixed image is the first element and the moving image is the second element\n"
    )
    for name, plist in pairs.items():
        (folder / f"pair_{name}.txt").write_text(header + "".join(f"({f:04d}, {m:04d})\n" for f, m in plist))
    return folder


def lumir_official_json(path: Path, n_train: int) -> dict:
    """The shipped official ``LUMIR_dataset.json`` with its training list cut to ``n_train`` entries."""
    official = json.loads(path.read_text())
    official["training"] = official["training"][:n_train]
    official["numTraining"] = n_train
    return official


def make_lumir_zip(
    path: Path, official: dict, shape: tuple[int, int, int], *, omit: Iterable[str] = ()
) -> Path:
    """A zip laid out like LUMIR_L2R24_TrainVal.zip holding every image ``official`` names (minus ``omit``).

    Image k (its LUMIR id) is filled with intensity k % 256 in [0, 255], as the release's range.
    """
    omit = set(omit)
    rels = {e["image"] for e in official["training"]}
    rels |= {e[side] for e in official["validation"] for side in ("fixed", "moving")}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("LUMIR_L2R24_TrainVal/README.txt", "decoy")
        for rel in sorted(rels):
            name = rel.removeprefix("./")
            if name in omit:
                continue
            k = int(re.search(r"(\d+)", Path(name).name).group(1))
            data = np.full(shape, k % 256, dtype=np.float32)
            data[0, 0, 0] = 255.0
            zf.writestr(f"LUMIR_L2R24_TrainVal/{name}", nifti_bytes(data, np.eye(4)))
    return path
