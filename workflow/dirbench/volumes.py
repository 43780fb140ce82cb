"""In-memory volume cache with background prefetch, so that data loading never stalls training.

Volumes are decoded once (NIfTI → float32 numpy, intensity-scaled) and kept in an LRU cache bounded in
bytes; :meth:`VolumeCache.prefetch` decodes upcoming volumes on a worker thread while the GPU (or the
CPU's other threads) run the current step.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dirbench.io import load_image, load_labels

__all__ = ["VolumeCache"]


class VolumeCache:
    """LRU cache of decoded volumes keyed by (path, kind), ``kind`` being ``"image"`` or ``"label"``.

    Args:
        max_bytes: the cache budget; the least recently used volumes are dropped beyond it.
        shape: expected ``(X, Y, Z)``; a mismatching file raises ``UserError`` naming it.
        intensity_scale: images are multiplied by it (LUMIR: 1/255).
    """

    def __init__(self, max_bytes: float, shape: tuple[int, int, int], intensity_scale: float = 1.0) -> None:
        self.max_bytes = max_bytes
        self.shape = shape
        self.intensity_scale = intensity_scale
        self._data: OrderedDict[tuple[Path, str], np.ndarray] = OrderedDict()
        self._pending: dict[tuple[Path, str], Future[np.ndarray]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")

    def _load(self, key: tuple[Path, str]) -> np.ndarray:
        path, kind = key
        if kind == "label":
            return load_labels(path, self.shape)
        image = load_image(path, self.shape)
        return image * np.float32(self.intensity_scale) if self.intensity_scale != 1.0 else image

    def _store(self, key: tuple[Path, str], array: np.ndarray) -> None:
        with self._lock:
            self._data[key] = array
            self._data.move_to_end(key)
            total = sum(a.nbytes for a in self._data.values())
            while total > self.max_bytes and len(self._data) > 1:
                _, dropped = self._data.popitem(last=False)
                total -= dropped.nbytes

    def get(self, path: Path, kind: str = "image") -> np.ndarray:
        """The decoded volume (waits for a pending prefetch of it; loads it now otherwise)."""
        key = (Path(path), kind)
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            pending = self._pending.pop(key, None)
        array = pending.result() if pending is not None else self._load(key)
        self._store(key, array)
        return array

    def prefetch(self, paths: list[Path], kind: str = "image") -> None:
        """Start decoding ``paths`` in the background (already cached or pending ones are skipped)."""
        with self._lock:
            for path in paths:
                key = (Path(path), kind)
                if key not in self._data and key not in self._pending:
                    self._pending[key] = self._pool.submit(self._load, key)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
