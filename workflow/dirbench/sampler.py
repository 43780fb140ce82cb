"""Training-pair sampling, seeded once and identical across methods.

As in the paper's code: the moving image is the next item of a shuffled pass over the training images and
the fixed image is a uniformly random *other* training image; an epoch of ``samples_per_epoch`` samples
holds ``samples_per_epoch // 2`` pairs (non-IC models take two steps per pair, A→B then B→A; IC models one
symmetric step counted as two samples).

The pairs of epoch ``e`` are a pure function of ``(seed, e)``, so resuming mid-run, or training another
method, draws exactly the same pairs without carrying sampler state around.
"""

from __future__ import annotations

import numpy as np

__all__ = ["epoch_pairs", "training_subset"]


def training_subset(n_images: int, size: int | None, seed: int = 42) -> list[int]:
    """Indices of a training subset of ``size`` images: a prefix of one seeded permutation.

    Smaller subsets are therefore always strict subsets of larger ones (nested), for the
    training-set-size studies (Fig. B2 right, Table B3). ``None`` keeps every image, in file order.
    """
    if size is None or size >= n_images:
        return list(range(n_images))
    perm = np.random.default_rng([seed, 0x5EB5E7]).permutation(n_images)
    return sorted(int(i) for i in perm[:size])


def epoch_pairs(n_images: int, epoch: int, n_pairs: int, seed: int = 42) -> list[tuple[int, int]]:
    """``n_pairs`` (moving, fixed) index pairs for ``epoch``, moving ≠ fixed.

    Moving indices walk a fresh shuffle of the images (reshuffled when exhausted); each fixed index is a
    uniform draw among the other images.
    """
    if n_images < 2:
        raise ValueError("pair sampling needs at least 2 training images")
    rng = np.random.default_rng([seed, epoch])
    moving: list[int] = []
    while len(moving) < n_pairs:
        moving.extend(int(i) for i in rng.permutation(n_images))
    pairs = []
    for m in moving[:n_pairs]:
        f = int(rng.integers(n_images - 1))
        pairs.append((m, f + (f >= m)))
    return pairs
