"""Training loop: loss goes down, exact resume after SIGKILL / SIGTERM, the NaN guard, shape checks."""

from __future__ import annotations

import csv
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dirbench.checkpoint import load_checkpoint
from dirbench.sampler import epoch_pairs, training_subset
from dirbench.train_config import TrainConfig
from dirbench.training import Trainer, TrainingError, train
from synthetic import make_dataset

from methods import RegistrationOutput

SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), n_train=4, n_eval=2, shape=SHAPE)


def config(dataset: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        method="voxelmorph", dataset=str(dataset), epochs=3, samples_per_epoch=6, lr=1e-3, val_every=1,
        threads=1, tensorboard=False,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_sampler_is_seeded_nested_and_never_pairs_an_image_with_itself() -> None:
    assert epoch_pairs(10, 3, 50) == epoch_pairs(10, 3, 50)
    assert epoch_pairs(10, 3, 50) != epoch_pairs(10, 4, 50)
    pairs = epoch_pairs(5, 0, 200)
    assert all(m != f for m, f in pairs)
    assert {m for m, _ in pairs[:5]} == set(range(5))  # moving images walk a shuffled pass
    sizes = [300, 212, 150, 106, 75, 53, 37, 26, 19, 13, 10]
    subsets = [set(training_subset(300, n)) for n in sizes]
    assert [len(s) for s in subsets] == sizes
    assert all(small < big for big, small in itertools.pairwise(subsets))


def test_a_few_steps_lower_the_loss_on_a_fixed_pair(dataset: Path, tmp_path: Path) -> None:
    trainer = Trainer(config(dataset), tmp_path)
    moving, fixed = (trainer._image(r) for r in trainer.train_images[:2])
    with torch.no_grad():
        before = trainer._loss(moving, fixed)[0].item()
    for k in range(30):
        trainer._update(moving, fixed, f"step {k}")
    with torch.no_grad():
        after = trainer._loss(moving, fixed)[0].item()
    assert after < 0.95 * before, (before, after)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _run_cli(dataset: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "dirbench.cli", "train", "--method", "voxelmorph", "--dataset", str(dataset),
        "--out", str(out), "--epochs", "3", "--samples-per-epoch", "6", "--lr", "1e-3", "--threads", "1",
        "--no-tensorboard", "--no-progress", *extra,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path) as fh:
        return sum(1 for _ in csv.DictReader(fh))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_a_kill_is_bit_identical(dataset: Path, tmp_path: Path, sig: signal.Signals) -> None:
    reference = tmp_path / "reference"
    train(config(dataset), reference, progress=False)

    run = tmp_path / "killed"
    proc = _run_cli(dataset, run)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # last.pt appears (atomically) at the end of epoch 1
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    assert proc.returncode in (-signal.SIGKILL, 143), proc.stderr.read().decode() if proc.stderr else ""
    position = load_checkpoint(run / "last.pt")["position"]
    assert position["epoch"] < 3, "the run finished before it could be interrupted"
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
    train(config(dataset), run, resume=True, progress=False)

    for name in ("last.pt", "best.pt"):
        ref, got = _weights(reference / name), _weights(run / name)
        assert ref.keys() == got.keys()
        for key in ref:
            assert torch.equal(ref[key], got[key]), (name, key)
    assert _rows(run / "metrics.csv") == 3
    # Per-epoch training losses too, including the epoch that was interrupted (SIGTERM lands mid-epoch).
    columns = ["epoch", "loss", "sim", "reg", "val_value"]
    with open(reference / "metrics.csv") as a, open(run / "metrics.csv") as b:
        ref_rows = [[r[c] for c in columns] for r in csv.DictReader(a)]
        got_rows = [[r[c] for c in columns] for r in csv.DictReader(b)]
    assert ref_rows == got_rows


def test_non_finite_loss_stops_with_position_and_keeps_last_checkpoint(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(config(dataset, epochs=1), tmp_path, progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    trainer = Trainer(config(dataset, epochs=2), tmp_path)
    trainer.restore(tmp_path / "last.pt")

    def poisoned(moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        return RegistrationOutput(disp=torch.full((1, 3, *SHAPE), float("nan")))

    monkeypatch.setattr(trainer, "forward", poisoned)
    where = r"non-finite loss .* at epoch 2, step 1, pair \(moving \d{4}, fixed \d{4}\)"
    with pytest.raises(TrainingError, match=where):
        trainer.run(progress=False)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_dataset_shape_mismatch_fails_before_training(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"dataset images are \(32, 32, 32\) but the model is configured for"):
        train(config(dataset, model={"img_size": [48, 48, 48]}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_run_outputs_and_summary(dataset: Path, tmp_path: Path) -> None:
    summary = train(config(dataset, epochs=2, val_every=2), tmp_path, progress=False)
    assert summary["epochs"] == 2 and summary["updates"] == 2 * 3 * 2
    assert summary["val_metric"] == "dice" and summary["best_epoch"] == 2
    assert 0.0 < summary["best_value"] <= 1.0
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["val_value"] == "" for r in rows] == [True, False]
    assert float(rows[0]["lr"]) == pytest.approx(1e-3)
    assert all(float(r["steps_per_s"]) > 0 for r in rows)
    assert (tmp_path / "run.yaml").exists() and (tmp_path / "summary.json").exists()
    with pytest.raises(TrainingError, match="pass --resume"):
        train(config(dataset, epochs=2), tmp_path, progress=False)


def test_cosine_schedule_restarts_per_update(dataset: Path, tmp_path: Path) -> None:
    cfg = config(dataset, epochs=3, schedule="cosine", cosine_t0=2, cosine_tmult=2, lr=1e-3, lr_min=1e-5)
    train(cfg, tmp_path, progress=False)
    with open(tmp_path / "metrics.csv") as fh:
        lrs = [float(r["lr"]) for r in csv.DictReader(fh)]

    def cosine(t: float, period: float) -> float:
        return 1e-5 + (1e-3 - 1e-5) * (1 + np.cos(np.pi * t / period)) / 2

    # Stepped per update with epoch + fraction: cycle 1 covers epochs [0, 2), cycle 2 [2, 6).
    assert lrs == pytest.approx([cosine(1, 2), 1e-3, cosine(1, 4)], rel=1e-9)
