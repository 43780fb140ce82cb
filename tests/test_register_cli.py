"""``dirbench register`` at the command line: Greedy's inputs are checked first, the batch progress bar."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dirbench.cli import main
from synthetic import make_dataset

SHAPE = (24, 24, 24)
FAST_GREEDY = json.dumps({"iterations": "4x2", "threads": 1, "extra_args": ["-noise", "0"]})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), n_train=2, n_eval=2, shape=SHAPE)


def greedy_pair(fixed: Path, moving: Path, out: Path) -> list[str]:
    return ["register", "--method", "greedy", "--greedy-config", FAST_GREEDY, "--fixed", str(fixed),
            "--moving", str(moving), "--out", str(out)]


def test_greedy_pair_writes_a_displacement(dataset: Path, tmp_path: Path) -> None:
    images = sorted((dataset.parent / "images").glob("*.nii.gz"))
    assert main(greedy_pair(images[0], images[1], tmp_path / "disp.nii.gz")) == 0
    assert nib.load(str(tmp_path / "disp.nii.gz")).shape == (*SHAPE, 3)


def _bad_moving(kind: str, good: Path, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "truncated":  # ITK reads the partial gzip without complaint; nibabel does not
        data = good.read_bytes()
        assert gzip.decompress(data)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("this is not a NIfTI image\n")
    elif kind == "four_d":
        nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 2), np.float32), np.eye(4)), str(path))
    elif kind == "singular":
        img = nib.Nifti1Image(np.ones(SHAPE, np.float32), None)
        img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
        nib.save(img, str(path))
    return path


@pytest.mark.parametrize(("kind", "problem"), [
    ("truncated", "not a readable NIfTI file (corrupt or truncated?)"),
    ("missing", "file not found"),
    ("text", "not a readable NIfTI file"),
    ("four_d", "expected a 3-D array, got shape (24, 24, 24, 2)"),
    ("singular", "the voxel-to-world affine is not invertible"),
])  # fmt: skip
def test_greedy_refuses_a_bad_input_in_one_line_and_writes_nothing(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, problem: str
) -> None:
    images = sorted((dataset.parent / "images").glob("*.nii.gz"))
    moving = _bad_moving(kind, images[1], tmp_path)
    out = tmp_path / "out" / "disp.nii.gz"
    assert main(greedy_pair(images[0], moving, out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dirbench: error: {moving}: {problem}"), err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def _batch(dataset: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["register", "--method", "greedy", "--greedy-config", FAST_GREEDY, "--pairs", f"{dataset}:test",
            "--out-dir", str(out_dir), *extra]


def _on_a_terminal(args: list[str]) -> str:
    """Run the CLI in a subprocess whose stderr is a 100-column terminal; returns what it wrote there."""
    cmd = [sys.executable, "-m", "dirbench.cli", *args]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait() == 0
    return b"".join(chunks).decode(errors="replace")


def test_batch_register_shows_a_progress_bar_on_a_terminal_only(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _on_a_terminal(_batch(dataset, tmp_path / "a"))
    assert "register greedy" in shown and "2/2" in shown and "pair" in shown, shown
    assert "register greedy" not in _on_a_terminal(_batch(dataset, tmp_path / "b", "--no-progress"))
    assert main(_batch(dataset, tmp_path / "c")) == 0  # stderr captured, not a terminal (a job log): no bar
    assert "register greedy" not in capsys.readouterr().err
    assert len(list((tmp_path / "c").glob("disp_*.nii.gz"))) == 2


def test_flags_that_would_be_ignored_are_refused(dataset: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    images = sorted((dataset.parent / "images").glob("*.nii.gz"))
    assert main([*greedy_pair(images[0], images[1], tmp_path / "d.nii.gz"), "--centre", "mass", "--normalise"]) == 1
    assert "--centre, --normalise: only for --checkpoint" in capsys.readouterr().err
    assert main([*_batch(dataset, tmp_path / "batch"), "--format", "itk"]) == 1
    assert "--format applies to single-pair mode" in capsys.readouterr().err
    assert not (tmp_path / "d.nii.gz").exists() and not (tmp_path / "batch").exists()
