"""Batch registration writes an inverse-consistent model's inverse field, and evaluation turns it into ``ic_error``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from dirbench.checkpoint import load_checkpoint, rebuild_model
from dirbench.cli import main
from dirbench.dataset import Dataset
from dirbench.io import load_affine, load_disp, load_image, load_labels
from dirbench.metrics import compute_ic_error
from dirbench.train_config import TrainConfig
from dirbench.training import train
from synthetic import make_dataset

SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A SITReg checkpoint after one update (the weights do not matter here) and its dataset."""
    root = tmp_path_factory.mktemp("ic")
    dataset = make_dataset(root / "data", n_train=2, n_eval=2, shape=SHAPE)
    cfg = TrainConfig(method="sitreg", dataset=str(dataset), model={"img_size": list(SHAPE)}, epochs=1,
                      samples_per_epoch=2, threads=1, tensorboard=False)  # fmt: skip
    train(cfg, root / "run", progress=False)
    return dataset, root / "run" / "best.pt"


def test_register_writes_the_inverse_field_and_evaluate_reports_ic_error(run, tmp_path):
    dataset, checkpoint = run
    out = tmp_path / "disp"
    argv = ["register", "--checkpoint", str(checkpoint), "--pairs", f"{dataset}:test", "--out-dir", str(out),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    pairs = Dataset.load(dataset).pairs("test")
    state = load_checkpoint(checkpoint)
    model = rebuild_model(state, checkpoint)
    for pair in pairs:
        inverse_path = out / pair.inverse_name
        assert inverse_path.is_file() and (out / pair.disp_name).is_file()
        assert np.array_equal(load_affine(inverse_path), load_affine(pair.moving.image))  # on the moving grid
        moving, fixed = (torch.from_numpy(load_image(p))[None, None] for p in (pair.moving.image, pair.fixed.image))
        with torch.no_grad():
            expected = model(moving, fixed).inverse[0].permute(1, 2, 3, 0).numpy()
        np.testing.assert_allclose(load_disp(inverse_path), expected, atol=1e-5)

    csv_path = tmp_path / "sitreg.csv"
    assert main(["evaluate", "--pairs", f"{dataset}:test", "--disp-dir", str(out), "--method", "sitreg",
                 "--csv", str(csv_path)]) == 0  # fmt: skip
    with open(csv_path, newline="") as fh:
        rows = {(r["fixed"], r["moving"]): float(r["value"]) for r in csv.DictReader(fh) if r["metric"] == "ic_error"}
    assert len(rows) == len(pairs)
    for pair in pairs:
        brain = load_labels(pair.fixed.label) > 0
        disp, inverse = load_disp(out / pair.disp_name), load_disp(out / pair.inverse_name)
        assert rows[pair.fixed.id, pair.moving.id] == compute_ic_error(disp, inverse, brain)
        # SITReg is inverse-consistent by construction: the round trip is small (interpolation and solver error)
        assert 0.0 < rows[pair.fixed.id, pair.moving.id] < 0.05
