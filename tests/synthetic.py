"""Tiny synthetic datasets in the ``dataset.json`` layout, for tests that need data but not the demo set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from dirbench.io import save_image, save_labels
from dirbench.warp import warp_array
from scipy.ndimage import gaussian_filter


def _phantom(shape: tuple[int, int, int]) -> np.ndarray:
    """A label map of 4 nested / adjacent ellipsoids (labels 1..4)."""
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.array(shape) - 1) / 2
    r = (grid - centre.reshape(3, 1, 1, 1)) / (np.array(shape).reshape(3, 1, 1, 1) / 2)
    dist = np.sqrt((r**2).sum(0))
    labels = np.zeros(shape, np.int32)
    labels[dist < 0.85] = 1
    labels[(dist < 0.6) & (r[0] < 0)] = 2
    labels[(dist < 0.6) & (r[0] >= 0)] = 3
    labels[dist < 0.25] = 4
    return labels


def make_dataset(
    root: Path, n_train: int = 4, n_eval: int = 2, shape: tuple[int, int, int] = (32, 32, 32), seed: int = 0
) -> Path:
    """Write ``n_train + n_eval`` deformed phantoms (images + labels) and a ``dataset.json``; return its path.

    Pair lists: ``validation`` and ``test`` (the eval images, both orders).
    """
    rng = np.random.default_rng(seed)
    base = _phantom(shape)
    intensity = np.array([0.0, 0.3, 0.6, 0.8, 1.0], np.float32)
    records = []
    for i in range(n_train + n_eval):
        disp = np.stack([gaussian_filter(rng.standard_normal(shape), 4.0) for _ in range(3)], axis=-1)
        disp *= 2.0 / max(np.abs(disp).max(), 1e-6)
        labels = warp_array(base, disp, order=0)
        image = gaussian_filter(intensity[labels], 0.7) + 0.02 * rng.standard_normal(shape).astype(np.float32)
        name = f"img{i + 1:04d}.nii.gz"
        save_image(root / "images" / name, np.clip(image, 0, None).astype(np.float32), np.eye(4))
        save_labels(root / "labels" / name.replace("img", "seg"), labels, np.eye(4))
        records.append({"image": f"./images/{name}", "label": f"./labels/{name.replace('img', 'seg')}"})
    evals = records[n_train:]
    pairs = [
        {"fixed": a["image"], "moving": b["image"]} for a in evals for b in evals if a is not b
    ]
    spec = {
        "name": "synthetic",
        "tensorImageShape": {"0": list(shape)},
        "labels": {str(k): f"label_{k}" for k in range(1, 5)},
        "training": records[:n_train],
        "images": evals,
        "validation": pairs,
        "test": pairs,
    }
    path = root / "dataset.json"
    path.write_text(json.dumps(spec, indent=2))
    return path
