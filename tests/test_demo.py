"""The offline demo dataset (``dirbench.data.demo``): parcellation, determinism, ground-truth warps, CLI.

Generation runs on a coarse 6 mm grid (32×48×32) with a few subjects to stay fast; the figures at the
defaults (4 mm, 24 subjects) are quoted in the module docstring, not asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dirbench import cli
from dirbench.data import demo
from dirbench.dataset import Dataset
from dirbench.errors import UserError
from dirbench.io import load_disp, load_image, load_labels, save_disp
from dirbench.warp import warp_array
from scipy import ndimage

from methods.spatial import compose, jacobian_det

SPACING = 6.0
LABEL_IDS = list(range(1, 36))


def dice(fixed: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """Per-label Dice over labels 1..35 (NaN where a label is absent from both)."""
    out = []
    for k in LABEL_IDS:
        f, w = fixed == k, warped == k
        denom = f.sum() + w.sum()
        out.append(2.0 * (f & w).sum() / denom if denom else np.nan)
    return np.array(out)


def centroid_error(fixed: np.ndarray, warped: np.ndarray) -> float:
    """Mean distance (voxels) between the centroids of the landmark blobs 1..K of two landmark volumes."""
    ids = range(1, len(demo.LANDMARK_LABELS) + 1)
    return float(np.mean([np.linalg.norm(np.argwhere(fixed == k).mean(0) - np.argwhere(warped == k).mean(0))
                          for k in ids]))


def as_torch(disp: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(disp, -1, 0)))[None]


def as_numpy(disp: torch.Tensor) -> np.ndarray:
    return np.moveaxis(disp[0].numpy(), 0, -1)


@pytest.fixture(scope="module")
def template() -> demo.Template:
    return demo.build_template(SPACING)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    demo.generate(out, demo.DemoParams(subjects=8, spacing=SPACING, seed=3))
    return out


# --------------------------------------------------------------------------- template


def test_grid_sides_are_multiples_of_16_and_hold_the_brain() -> None:
    maps, src = demo._load_mni152()
    brain = maps["gm"] + maps["wm"] >= 0.2
    idx = np.argwhere(brain)
    lo, hi = idx.min(0) + src[:3, 3], idx.max(0) + src[:3, 3]  # the template is 1 mm, axis-aligned
    for spacing in (1.0, 2.5, 3.0, 4.0, 5.0, 7.0, 8.0):
        shape, affine = demo._grid(brain, src, spacing)
        assert all(n % 16 == 0 and n > 0 for n in shape)
        np.testing.assert_allclose(np.diag(affine)[:3], spacing)
        first, last = affine[:3, 3], affine[:3, 3] + spacing * (np.array(shape) - 1)
        assert (first <= lo - demo.MARGIN_MM + 1e-9).all() and (last >= hi + demo.MARGIN_MM - 1e-9).all()
        # Rounded up to the next multiple of 16, no further.
        needed = (hi - lo + 2 * demo.MARGIN_MM) / spacing + 1
        assert all(n - 16 < need for n, need in zip(shape, needed, strict=True))
    assert demo._grid(brain, src, 4.0)[0] == (48, 64, 48)


def test_template_has_all_labels_and_landmarks(template: demo.Template) -> None:
    assert all(n % 16 == 0 for n in template.shape) and template.spacing == SPACING
    assert sorted(np.unique(template.labels).tolist()) == [0, *LABEL_IDS]
    assert set(demo.LABELS) == set(LABEL_IDS) and len(set(demo.LABELS.values())) == 35
    ball = int(demo._ball(demo.LANDMARK_RADIUS).sum())
    counts = np.bincount(template.landmarks.ravel(), minlength=len(demo.LANDMARK_LABELS) + 1)
    assert ball == 19 and counts[1:].tolist() == [ball] * len(demo.LANDMARK_LABELS)
    # Each landmark's centre voxel lies inside its label.
    for k, label in enumerate(demo.LANDMARK_LABELS, start=1):
        centre = np.round(np.argwhere(template.landmarks == k).mean(0)).astype(int)
        assert template.labels[tuple(centre)] == label


def test_parcellation_is_anatomical(template: demo.Template) -> None:
    labels, image = template.labels, template.image
    # The ICBM 2009a *symmetric* template on a grid centred on x = 0: mirroring swaps the hemispheres exactly.
    assert demo._world(template.affine, template.shape)[0].mean() == pytest.approx(0.0, abs=1e-9)
    mirrored = labels[::-1]
    swapped = np.where((mirrored >= 1) & (mirrored <= 17), mirrored + 17,
                       np.where((mirrored >= 18) & (mirrored <= 34), mirrored - 17, mirrored))
    assert np.array_equal(swapped, labels)
    # Left labels (1..17) lie at x < 0 (RAS), right ones at x > 0.
    x = demo._world(template.affine, template.shape)[0]
    assert (x[(labels >= 1) & (labels <= 17)] < 0).all() and (x[(labels >= 18) & (labels <= 34)] > 0).all()
    # T1 contrast: white matter > cortex > ventricles.
    wm = np.isin(labels, [*range(7, 13), *range(24, 30)])
    cortex = np.isin(labels, [*range(1, 7), *range(18, 24)])
    ventricles = np.isin(labels, [13, 30])
    assert image[wm].mean() > image[cortex].mean() + 0.1 > image[ventricles].mean() + 0.2
    # Contiguous: each label's largest 26-connected piece holds at least 85 % of it.
    for k in LABEL_IDS:
        pieces, _ = ndimage.label(labels == k, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(pieces.ravel())[1:]
        assert sizes.max() >= 0.85 * sizes.sum(), demo.LABELS[k]


# --------------------------------------------------------------------------- subjects


def test_subjects_are_bitwise_deterministic(template: demo.Template) -> None:
    params = demo.DemoParams(subjects=6, spacing=SPACING, seed=11)
    a = demo.make_subject(template, params, 2)
    b = demo.make_subject(template, demo.DemoParams(subjects=30, spacing=SPACING, seed=11), 2)
    for field in ("image", "labels", "landmarks", "warp", "inverse_warp"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), field
    other = demo.make_subject(template, demo.DemoParams(subjects=6, spacing=SPACING, seed=12), 2)
    assert not np.array_equal(a.warp, other.warp) and not np.array_equal(a.image, other.image)
    assert not np.array_equal(a.warp, demo.make_subject(template, params, 3).warp)


def test_subject_warps_are_inverse_diffeomorphisms(template: demo.Template) -> None:
    s = demo.make_subject(template, demo.DemoParams(spacing=SPACING), 1)
    brain = template.brain > 0
    rms_mm = SPACING * np.sqrt((s.warp[brain] ** 2).sum(-1).mean())
    assert 2.0 < rms_mm < 10.0  # a few mm, as inter-subject variability after affine alignment
    assert jacobian_det(as_torch(s.warp)).min() > 0 and jacobian_det(as_torch(s.inverse_warp)).min() > 0
    for a, b in ((s.warp, s.inverse_warp), (s.inverse_warp, s.warp)):
        residual = np.linalg.norm(as_numpy(compose(as_torch(a), as_torch(b))), axis=-1)[brain]
        assert residual.mean() < 0.05 and residual.max() < 0.25
    # The image is the template pulled through the stored warp, up to bias and noise.
    clean = warp_array(template.image, s.warp)
    assert np.corrcoef(clean[brain], s.image[brain])[0, 1] > 0.9
    assert s.image.min() >= 0 and s.image.max() == 1
    assert (s.image[warp_array(template.brain, s.warp) < 0.5] == 0).all()


def test_majority_label_warp_matches_one_hot_interpolation(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 5, (9, 8, 7)).astype(np.int32)
    assert np.array_equal(demo.warp_labels_majority(labels, np.zeros((9, 8, 7, 3))), labels)
    shift = np.zeros((9, 8, 7, 3))
    shift[..., 1] = 2.0  # pull from y + 2: an exact shift, background beyond the edge
    expected = np.zeros_like(labels)
    expected[:, :-2] = labels[:, 2:]
    assert np.array_equal(demo.warp_labels_majority(labels, shift), expected)
    # Second implementation: trilinear interpolation of each one-hot map (background outside), then arg-max.
    disp = rng.uniform(-2.0, 2.0, (9, 8, 7, 3))
    coords = np.indices(labels.shape, dtype=np.float64) + np.moveaxis(disp, -1, 0)
    onehot = [ndimage.map_coordinates((labels == k).astype(np.float64), coords, order=1, mode="grid-constant",
                                      cval=float(k == 0)) for k in range(5)]
    assert np.array_equal(demo.warp_labels_majority(labels, disp), np.argmax(np.stack(onehot), 0))


# --------------------------------------------------------------------------- the dataset folder


def test_dataset_json_loads_and_pairs_resolve(generated: Path) -> None:
    ds = Dataset.load(generated / "dataset.json")
    assert ds.name == "demo" and ds.labels == LABEL_IDS and ds.spacing == (SPACING,) * 3
    assert ds.ground_truth == "template_warps"  # the evaluation reports epe
    assert all(n % 16 == 0 for n in ds.shape) and ds.raw["seed"] == 3
    assert [demo.split_sizes(n) for n in (8, 18, 24)] == [(4, 2, 2), (10, 4, 4), (14, 5, 5)]
    assert [r.id for r in ds.training] == ["0001", "0002", "0003", "0004"]
    assert ds.pair_lists() == ["validation", "test"]
    assert [(p.fixed.id, p.moving.id) for p in ds.pairs("validation")] == [("0006", "0005")]
    assert [(p.fixed.id, p.moving.id) for p in ds.pairs("test")] == [("0008", "0007")]
    for record in ds.index().values():
        image = load_image(record.image, ds.shape)
        assert image.min() >= 0.0 and image.max() == 1.0 and image[0, 0, 0] == 0.0
        assert sorted(np.unique(load_labels(record.landmarks, ds.shape)).tolist()) == list(range(17))
        assert len(np.unique(load_labels(record.label, ds.shape))) >= 34  # a small label may shrink away
    for pair in ds.pairs("test") + ds.pairs("validation"):
        assert pair.fixed.label is not None and pair.moving.landmarks is not None
    manifest = json.loads((generated / "manifest.json").read_text())
    assert manifest["params"]["seed"] == 3
    assert set(manifest["files"]) >= {"dataset.json", "images/img0008.nii.gz", "warps/invwarp0008.nii.gz"}


def test_initial_dice_is_like_oasis(generated: Path) -> None:
    """Zero-displacement overlap over all pairs: OASIS starts at 0.58; the 6 mm grid sits a little higher."""
    ds = Dataset.load(generated / "dataset.json")
    labels = {r.id: load_labels(r.label) for r in ds.index().values()}
    ids = sorted(labels)
    scores = [np.nanmean(dice(labels[f], labels[m])) for i, m in enumerate(ids) for f in ids[i + 1 :]]
    assert 0.45 < np.mean(scores) < 0.8 and max(scores) < 0.85


def test_true_pair_disp_recovers_the_fixed_subject(generated: Path, template: demo.Template) -> None:
    ds = Dataset.load(generated / "dataset.json")
    index = {r.id: r for r in ds.index().values()}
    brain = template.brain > 0
    for fixed, moving in [("0008", "0007"), ("0002", "0005"), ("0003", "0003")]:
        u = demo.true_pair_disp(generated, fixed, moving)
        assert u.shape == (*ds.shape, 3) and u.dtype == np.float32
        warp_f = load_disp(generated / f"warps/warp{fixed}.nii.gz")
        warp_m = load_disp(generated / f"warps/warp{moving}.nii.gz")
        # Geometry: φ_m(x + u(x)) = φ_f(x), up to trilinear resampling of the fields.
        residual = np.linalg.norm(as_numpy(compose(as_torch(warp_m), as_torch(u))) - warp_f, axis=-1)[brain]
        assert residual.mean() < 0.03 and residual.max() < 0.3
        f_lab, m_lab = load_labels(index[fixed].label), load_labels(index[moving].label)
        chained = as_numpy(compose(as_torch(warp_m), as_torch(u)))
        assert np.nanmean(dice(f_lab, demo.warp_labels_majority(template.labels, chained))) > 0.97
        if fixed == moving:
            assert np.abs(u[brain]).max() < 0.2
            continue
        # Labels and landmarks warped as the evaluators do (nearest neighbour). The coarse grid caps the
        # overlap: the moving labels were already resampled once.
        before, after = np.nanmean(dice(f_lab, m_lab)), np.nanmean(dice(f_lab, warp_array(m_lab, u, order=0)))
        assert after > 0.75 and after > before + 0.04
        f_lmk, m_lmk = load_labels(index[fixed].landmarks), load_labels(index[moving].landmarks)
        tre = centroid_error(f_lmk, warp_array(m_lmk, u, order=0))
        assert tre < min(0.6, 0.7 * centroid_error(f_lmk, m_lmk))
        f_img, m_img = load_image(index[fixed].image), load_image(index[moving].image)
        assert np.mean((warp_array(m_img, u) - f_img) ** 2) < 0.5 * np.mean((m_img - f_img) ** 2)


def test_evaluate_reports_epe_against_the_true_field(generated: Path, tmp_path: Path) -> None:
    """``dirbench evaluate`` on demo pairs writes epe rows: the zero field gives the mean true displacement (mm)
    inside the fixed brain, the true field itself gives 0."""
    ds = Dataset.load(generated / "dataset.json")
    (pair,) = ds.pairs("test")
    truth = demo.true_pair_disp(ds, pair.fixed.id, pair.moving.id)
    brain = load_labels(pair.fixed.label) > 0
    disp_dir = tmp_path / "true"
    save_disp(disp_dir / pair.disp_name, truth, np.diag([SPACING] * 3 + [1.0]))
    epe = {}
    for method, source in (("initial", ["--zero"]), ("truth", ["--disp-dir", str(disp_dir)])):
        out = tmp_path / f"{method}.csv"
        argv = ["evaluate", "--pairs", f"{generated / 'dataset.json'}:test", *source, "--method", method,
                "--csv", str(out)]  # fmt: skip
        assert cli.main(argv) == 0
        epe[method] = [float(line.split(",")[-1]) for line in out.read_text().splitlines() if ",epe," in line]
    mean_true_mm = float(np.linalg.norm(truth[brain].astype(np.float64), axis=1).mean()) * SPACING
    assert epe["initial"] == [pytest.approx(mean_true_mm, rel=1e-6)] and mean_true_mm > 2.0
    assert epe["truth"] == [0.0]


def test_true_pair_disp_rejects_unknown_ids(generated: Path) -> None:
    with pytest.raises(UserError, match="0042"):
        demo.true_pair_disp(generated / "dataset.json", "0042", "0001")


def test_rerun_is_a_no_op_and_changes_regenerate(tmp_path: Path) -> None:
    params = demo.DemoParams(subjects=7, spacing=8.0, seed=5)
    demo.generate(tmp_path, params)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    demo.generate(tmp_path, params)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps
    first = load_image(tmp_path / "images/img0003.nii.gz")
    # A damaged folder is regenerated, with identical arrays.
    (tmp_path / "images/img0003.nii.gz").write_bytes(b"truncated")
    demo.generate(tmp_path, params)
    assert load_image(tmp_path / "images/img0003.nii.gz").tobytes() == first.tobytes()
    # Other settings are refused, naming them; with force, the files of dropped subjects go, nothing
    # temporary is left behind.
    with pytest.raises(UserError, match=r"made with other settings \(subjects: 7 → 6\); .* or --force"):
        demo.generate(tmp_path, demo.DemoParams(subjects=6, spacing=8.0, seed=5))
    assert (tmp_path / "images/img0007.nii.gz").exists()
    demo.generate(tmp_path, demo.DemoParams(subjects=6, spacing=8.0, seed=5), force=True)
    assert not (tmp_path / "images/img0007.nii.gz").exists()
    assert not (tmp_path / "warps/invwarp0007.nii.gz").exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert len(json.loads((tmp_path / "manifest.json").read_text())["files"]) == 1 + 3 + 6 * 5


def test_cli_generates_and_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert cli.main(["data", "demo", "--out", str(out), "--subjects", "6", "--spacing", "8", "--quiet"]) == 0
    assert "6 subjects (2 training, 2 validation, 2 test)" in capsys.readouterr().out
    assert Dataset.load(out / "dataset.json").shape == (32, 32, 32)
    for bad, message in [(["--subjects", "3"], "--subjects 3"), (["--spacing", "0"], "--spacing 0"),
                         (["--spacing", "-2"], "--spacing -2"), (["--spacing", "12"], "--spacing 12"),
                         (["--seed", "-1"], "--seed -1")]:
        assert cli.main(["data", "demo", "--out", str(tmp_path / "bad"), *bad]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert cli.main(["data", "demo", "--out", str(out), "--subjects", "7", "--spacing", "8", "--quiet"]) == 1
    assert capsys.readouterr().err.strip().endswith("regenerate it (results computed on the old data become stale)")
    assert cli.main(["data", "demo", "--out", str(out), "--subjects", "7", "--spacing", "8", "--quiet", "--force"]) == 0
    (tmp_path / "file").write_text("x")
    assert cli.main(["data", "demo", "--out", str(tmp_path / "file"), "--spacing", "8"]) == 1
    assert "not a folder" in capsys.readouterr().err
