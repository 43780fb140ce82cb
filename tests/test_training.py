"""Training loop: loss goes down, exact resume after SIGKILL / SIGTERM, the NaN guard, shape checks."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dirbench.checkpoint import load_checkpoint, save_checkpoint
from dirbench.dataset import Dataset
from dirbench.inference import Registrar
from dirbench.run_record import RunId, RunRecord
from dirbench.sampler import epoch_pairs, training_subset
from dirbench.train_config import TrainConfig
from dirbench.training import Trainer, TrainingError, train
from synthetic import make_dataset

import methods
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
    record = train(config(dataset, epochs=2, val_every=2), tmp_path, progress=False)
    summary = record.result
    assert summary["epochs"] == 2 and summary["updates"] == 2 * 3 * 2
    assert summary["val_metric"] == "dice" and summary["best_epoch"] == 2
    assert 0.0 < summary["best_value"] <= 1.0
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["val_value"] == "" for r in rows] == [True, False]
    assert float(rows[0]["lr"]) == pytest.approx(1e-3)
    assert all(float(r["steps_per_s"]) > 0 for r in rows)
    assert (tmp_path / "summary.json").exists() and not (tmp_path / "run.yaml").exists()
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


# ---------------------------------------------------------------------------------------------------- run record


def test_the_run_record_is_in_every_checkpoint_and_is_the_summary(dataset: Path, tmp_path: Path) -> None:
    run = RunId("tiny", "voxelmorph", None, 42)
    record = train(config(dataset, epochs=2), tmp_path, progress=False, run=run)
    from_summary = RunRecord.read(tmp_path / "summary.json")
    assert from_summary.to_dict() == record.to_dict()
    assert from_summary.run == run and from_summary.status == "finished"
    assert from_summary.train == config(dataset, epochs=2)
    assert from_summary.params.total == sum(p.numel() for p in methods.build("voxelmorph").parameters())
    assert from_summary.preprocessing.shape == SHAPE and from_summary.preprocessing.intensity_scale == 1.0
    assert from_summary.dataset.sha256 == hashlib.sha256(dataset.read_bytes()).hexdigest()
    for name in ("best.pt", "last.pt"):
        assert RunRecord.from_checkpoint(load_checkpoint(tmp_path / name), name).to_dict() == record.to_dict()


def test_a_checkpoint_without_a_record_is_refused(dataset: Path, tmp_path: Path) -> None:
    train(config(dataset, epochs=1), tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "best.pt")
    del state["record"]
    save_checkpoint(tmp_path / "old.pt", state)
    result = _cli("register", "--checkpoint", str(tmp_path / "old.pt"), "--pairs", f"{dataset}:test",
                  "--out-dir", str(tmp_path / "disp"))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"dirbench: error: {tmp_path / 'old.pt'}: checkpoint has no run record (written by an older DIRBench?); "
        "retrain it with this version"
    ]


def test_a_run_moved_away_from_its_dataset_registers_with_its_recorded_preprocessing(tmp_path: Path) -> None:
    """A LUMIR-like dataset (intensities 0-255, intensity_scale 1/255): the checkpoint alone carries the scale."""
    data = make_dataset(tmp_path / "data", n_train=3, n_eval=2, shape=SHAPE)
    raw = json.loads(data.read_text())
    raw["intensity_scale"] = 1 / 255
    data.write_text(json.dumps(raw))
    for entry in raw["training"]:  # 0-255 intensities, as LUMIR releases them
        path = data.parent / entry["image"]
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 255, image.affine), path)
    cfg = config(data, epochs=1, val_list="none")
    train(cfg, tmp_path / "run", progress=False)
    pair = Dataset.load(data).pairs("test")[0]
    registrar = Registrar.from_checkpoint(tmp_path / "run" / "best.pt", device="cpu")
    before = registrar(pair.fixed.image, pair.moving.image)[0]

    shutil.move(tmp_path / "run", tmp_path / "moved")
    shutil.move(data.parent, tmp_path / "elsewhere")  # the training dataset.json is gone from where it was
    moved = tmp_path / "elsewhere" / "images"
    after = Registrar.from_checkpoint(tmp_path / "moved" / "best.pt", device="cpu")(
        moved / pair.fixed.image.name, moved / pair.moving.image.name
    )[0]
    np.testing.assert_array_equal(before, after)
    assert RunRecord.read(tmp_path / "moved" / "summary.json").preprocessing.intensity_scale == pytest.approx(1 / 255)


# ---------------------------------------------------------------------------------------------------- observability


def test_every_epoch_prints_one_line_even_without_a_progress_bar(dataset: Path, tmp_path: Path) -> None:
    result = _cli("train", "--method", "voxelmorph", "--dataset", str(dataset), "--out", str(tmp_path / "run"),
                  "--epochs", "3", "--samples-per-epoch", "4", "--threads", "1", "--no-tensorboard",
                  "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "] epoch " in line]
    assert len(lines) == 3, result.stderr
    pattern = (
        r"\[voxelmorph\] epoch 2/3 · 8 updates · loss \d\.\d{4} \(sim \d\.\d{4}, reg \d\.\d{4}\) · val dice \d\.\d{4} "
        r"\(best \d\.\d{4} at epoch [12]; initial \d\.\d{4}\) · \d+\.\d\d steps/s · ETA \d:\d\d:\d\d"
    )
    assert re.fullmatch(pattern, lines[1]), lines[1]
    assert re.search(r"done: 3 epochs, 12 updates, best dice \d\.\d{4} \(weights of epoch [123]\); "
                     r"(converged|NOT converged|convergence unknown)", result.stderr)  # fmt: skip
    with open(tmp_path / "run" / "metrics.csv") as fh:
        assert [int(r["updates"]) for r in csv.DictReader(fh)] == [4, 8, 12]


# ---------------------------------------------------------------------------------------------------- collapse guard


def test_a_forced_collapse_stops_the_run_loudly_and_is_recorded(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = Trainer(config(dataset, epochs=3, val_every=2), tmp_path)  # collapses before the first validation
    model = trainer.model

    def runaway(moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationOutput:
        """The model's field pushed 100 voxels away: everything is sampled outside the moving image."""
        return RegistrationOutput(disp=model(moving, fixed).disp + 100.0)

    trainer.forward = runaway
    record = trainer.run(progress=False)
    err = capsys.readouterr().err
    assert record.status == "collapsed" and record.collapsed
    assert record.collapse is not None and record.collapse["epoch"] == 1
    assert record.result["epochs"] == 1, "the run must stop at the collapse, not train on"
    assert "COLLAPSED at epoch 1" in err and "lower learning rate" in err and "--lr 0.0001" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["collapsed"] is True and summary["status"] == "collapsed"
    assert "NCC²" in summary["collapse"]["reason"] or "outside" in summary["collapse"]["reason"]
    assert (tmp_path / "best.pt").is_file() and record.result["best_epoch"] == 1  # the DAG's declared output


def test_a_healthy_run_is_not_flagged(dataset: Path, tmp_path: Path) -> None:
    record = train(config(dataset, epochs=2), tmp_path, progress=False)
    assert not record.collapsed and record.status == "finished"
    assert record.converged is None  # 2 validations: too few to tell


# ---------------------------------------------------------------------------------------------------- resume


def test_raising_epochs_continues_a_finished_run_exactly(dataset: Path, tmp_path: Path) -> None:
    train(config(dataset, epochs=3), tmp_path / "reference", progress=False)
    train(config(dataset, epochs=2), tmp_path / "run", progress=False)
    record = train(config(dataset, epochs=3), tmp_path / "run", resume=True, progress=False)
    assert record.result["epochs"] == 3 and not list((tmp_path / "run").glob("stale-*"))
    ref, got = _weights(tmp_path / "reference" / "last.pt"), _weights(tmp_path / "run" / "last.pt")
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_refused_resume_names_the_settings_that_changed(dataset: Path, tmp_path: Path) -> None:
    train(config(dataset, epochs=1), tmp_path, progress=False)
    result = _cli("train", "--method", "voxelmorph", "--dataset", str(dataset), "--out", str(tmp_path), "--resume",
                  "--epochs", "2", "--samples-per-epoch", "6", "--lr", "1e-4", "--reg-weight", "2", "--threads", "1",
                  "--val-every", "1", "--no-tensorboard", "--no-progress")  # fmt: skip
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.count("\n") == 0, message
    assert "lr: 0.001 → 0.0001" in message and "reg_weight: 1.0 → 2.0" in message and "--on-change restart" in message
    assert "epochs" not in message.split("(")[1]


def test_sigint_exits_130_and_resumes(dataset: Path, tmp_path: Path) -> None:
    proc = _run_cli(dataset, tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130, proc.stderr.read().decode() if proc.stderr else ""
    assert "interrupted by SIGINT" in (proc.stderr.read().decode() if proc.stderr else "")


# ---------------------------------------------------------------------------------------------------- bad set-ups


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--method", "voxelmorf"], "dirbench: error: unknown method 'voxelmorf'; available: "),
        (["--model", '{"img_sise": [32, 32, 32]}'], "dirbench: error: method voxelmorph: bad model override(s)"),
        (["--lr", "fast"], "dirbench train: error: argument --lr: invalid float value: 'fast' (see dirbench train"),
        (["--epochs", "0"], "dirbench: error: epochs must be >= 1"),
    ],
)
def test_set_up_mistakes_are_one_line_and_leave_no_run_folder(
    dataset: Path, tmp_path: Path, flags: list[str], expected: str
) -> None:
    args = {"--method": "voxelmorph", "--dataset": str(dataset), "--out": str(tmp_path / "run")}
    args.update(dict(zip(flags[::2], flags[1::2], strict=True)))
    result = _cli("train", *itertools.chain.from_iterable(args.items()), "--no-progress")
    assert result.returncode == (2 if "argument" in expected else 1)
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "run").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dirbench.cli", *args], capture_output=True, text=True, env=env)
