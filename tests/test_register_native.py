"""``dirbench register --checkpoint`` on native images, end to end with a checkpoint from ``dirbench train``.

The checkpoint (VoxelMorph, 2 updates on a 32³ synthetic T1w dataset) is barely trained, so its field is
small; the checks here need no accuracy: the record's preprocessing is what inference uses, the same pair
stored LIA gives the same physical field as stored RAS (exactly, since the spacing agrees), a 1.2 mm copy
lands on its own grid, and every bad input is one line that names the file. The maths of the resampling
is tested to interpolation tolerance in ``test_native.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dirbench.checkpoint import load_checkpoint, save_checkpoint
from dirbench.cli import main
from dirbench.field_formats import load_field, voxel_to_physical
from dirbench.io import reorient
from scipy.ndimage import affine_transform
from synthetic import make_dataset

SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("native")
    dataset = make_dataset(root / "data", n_train=2, n_eval=2, shape=SHAPE)
    spec = json.loads(dataset.read_text())
    dataset.write_text(json.dumps({**spec, "modality": {"0": "T1w"}}))
    run = root / "run"
    args = ["train", "--method", "voxelmorph", "--dataset", str(dataset), "--out", str(run), "--epochs", "1",
            "--samples-per-epoch", "4", "--lr", "1e-3", "--threads", "1", "--no-tensorboard", "--no-progress"]
    assert main(args) == 0
    images = sorted((dataset.parent / "images").glob("*.nii.gz"))
    return {"root": root, "ckpt": run / "last.pt", "fixed": images[-2], "moving": images[-1]}


def register(trained: dict[str, Path], fixed: Path, moving: Path, out: Path, *extra: str) -> int:
    return main(["register", "--checkpoint", str(trained["ckpt"]), "--fixed", str(fixed), "--moving", str(moving),
                 "--out", str(out), "--device", "cpu", *extra])


def test_the_record_drives_preprocessing(trained: dict[str, Path]) -> None:
    state = load_checkpoint(trained["ckpt"])
    prep = state["record"]["preprocessing"]
    assert tuple(prep["shape"]) == SHAPE and tuple(prep["spacing"]) == (1.0, 1.0, 1.0) and prep["modality"] == "T1w"


def test_lia_and_ras_give_one_physical_field(trained: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ras_out = tmp_path / "ras.nii.gz"
    assert register(trained, trained["fixed"], trained["moving"], ras_out) == 0
    assert "dirbench:" not in capsys.readouterr().err  # on the training grid: nothing resampled, no notes
    ras = load_field(ras_out)
    assert np.abs(ras.disp).max() > 1e-3  # the network does move things

    lia_paths = []
    for name in ("fixed", "moving"):
        img = nib.load(str(trained[name]))
        data, affine = reorient(np.asarray(img.dataobj, np.float32), img.affine, "LIA")
        nib.save(nib.Nifti1Image(data, affine), str(path := tmp_path / f"{name}_lia.nii.gz"))
        lia_paths.append(path)
    lia_out = tmp_path / "lia.nii.gz"
    assert register(trained, *lia_paths, lia_out, "--format", "itk") == 0
    assert "copied (reoriented, padded/cropped) to the model grid" in capsys.readouterr().err
    lia = load_field(lia_out)
    assert lia.format == "itk" and lia.disp.shape == (32, 32, 32, 3)
    # The same world points: reorient the LIA result's physical field back to the RAS grid.
    phys_lia, _ = reorient(voxel_to_physical(lia.disp, lia.affine), lia.affine, "RAS")
    np.testing.assert_allclose(phys_lia, voxel_to_physical(ras.disp, ras.affine), atol=1e-4)

    # At 1.2 mm the field comes back on the 1.2 mm grid (27³) with that grid's affine.
    fine = tmp_path / "fixed_12.nii.gz"
    img = nib.load(str(trained["fixed"]))
    scale = np.diag([1.2, 1.2, 1.2, 1.0])
    data = affine_transform(np.asarray(img.dataobj, np.float32), np.diag([1.2] * 3), output_shape=(27, 27, 27),
                            order=1)
    nib.save(nib.Nifti1Image(data, img.affine @ scale), str(fine))
    assert register(trained, fine, trained["moving"], tmp_path / "d12.nii.gz") == 0
    out = nib.load(str(tmp_path / "d12.nii.gz"))
    assert out.shape == (27, 27, 27, 3) and np.allclose(out.affine, img.affine @ scale)


@pytest.mark.parametrize(("kind", "problem"), [
    ("four_d", "expected a 3-D array, got shape (32, 32, 32, 2)"),
    ("singular", "the voxel-to-world affine is not invertible"),
    ("far", "only 0.0% of its intensity lies inside the model's field of view"),
    ("sub-02_T2w", "a T2w image (from its BIDS file name), but"),
])  # fmt: skip
def test_bad_inputs_are_one_line_and_write_nothing(trained: dict[str, Path], tmp_path: Path, kind: str,
                                                   problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    img = nib.load(str(trained["moving"]))
    data = np.asarray(img.dataobj, np.float32)
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "four_d":
        nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), img.affine), str(path))
    elif kind == "singular":
        bad = nib.Nifti1Image(data, None)
        bad.header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
        nib.save(bad, str(path))
    elif kind == "far":
        shifted = img.affine.copy()
        shifted[:3, 3] += [0.0, 200.0, 0.0]
        nib.save(nib.Nifti1Image(data, shifted), str(path))
    else:
        nib.save(nib.Nifti1Image(data, img.affine), str(path))
    out = tmp_path / "out" / "disp.nii.gz"
    assert register(trained, trained["fixed"], path, out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dirbench: error: {path}: {problem}"), err
    if kind == "sub-02_T2w":
        assert "was trained on T1w images" in err
    assert not out.exists()


def test_other_spacing_is_said_and_a_checkpoint_without_record_refused(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = nib.load(str(trained["fixed"]))
    coarse = tmp_path / "coarse.nii.gz"
    data = affine_transform(np.asarray(img.dataobj, np.float32), np.diag([3.0] * 3), output_shape=(11, 11, 11),
                            order=1)
    nib.save(nib.Nifti1Image(data, img.affine @ np.diag([3.0, 3.0, 3.0, 1.0])), str(coarse))
    assert register(trained, coarse, trained["moving"], tmp_path / "d.nii.gz") == 0
    err = capsys.readouterr().err
    assert f"dirbench: warning: {coarse}: voxels of 3×3×3 mm, but {trained['ckpt']} was trained on 1×1×1 mm" in err

    state = load_checkpoint(trained["ckpt"])
    del state["record"]
    old = tmp_path / "old.pt"
    save_checkpoint(old, {k: v for k, v in state.items() if k != "format"})
    code = main(["register", "--checkpoint", str(old), "--fixed", str(trained["fixed"]), "--moving",
                 str(trained["moving"]), "--out", str(tmp_path / "x.nii.gz"), "--device", "cpu"])
    assert code == 1 and "old.pt: checkpoint has no run record" in capsys.readouterr().err
