"""Real handwritten digits (the 8x8 set that ships with scikit-learn), split once into
train / test images, and rendered as pairs on a 32x32 canvas for the operator task."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .shapes import IMAGE_SIZE

SPLIT_SEED = 1234  # fixed: the train/test image split never changes
TEST_FRACTION = 0.3


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0 * 255.0).astype(np.uint8)  # (1797, 8, 8)
    return images, d.target.astype(np.int64)


@lru_cache(maxsize=3)
def digit_indices(split: str) -> dict[int, np.ndarray]:
    """Indices of the digit images of ``split``, grouped by digit value.  'train' episodes use the
    train images; 'test' and 'val' episodes the held-out test images."""
    if split not in ("train", "test", "val"):
        raise ValueError(f"split must be 'train', 'test' or 'val', got {split!r}")
    images, targets = _digits()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(targets))
    n_test = int(len(perm) * TEST_FRACTION)
    chosen = perm[:n_test] if split in ("test", "val") else perm[n_test:]
    return {v: np.sort(chosen[targets[chosen] == v]) for v in range(10)}


def digit_image(index: int) -> tuple[np.ndarray, int]:
    images, targets = _digits()
    return images[index], int(targets[index])


def sample_digit(rng: np.random.Generator, split: str, value: int | None = None) -> tuple[int, int]:
    """Return (image index, value) of a random digit image of ``split``."""
    value = int(rng.integers(10)) if value is None else int(value)
    pool = digit_indices(split)[value]
    return int(pool[rng.integers(len(pool))]), value


def render_pair(left_index: int, right_index: int) -> np.ndarray:
    """Two digits, each upscaled 2x to 16x16, side by side in the middle of a 32x32 RGB image."""
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    top = (IMAGE_SIZE - 16) // 2
    for slot, idx in enumerate((left_index, right_index)):
        img, _ = digit_image(idx)
        big = np.kron(img, np.ones((2, 2), dtype=np.uint8))
        canvas[top:top + 16, slot * 16:(slot + 1) * 16] = big
    return np.repeat(canvas[:, :, None], 3, axis=2)
