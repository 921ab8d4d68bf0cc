"""The handwritten digits the embedded model is trained on (scikit-learn's ``load_digits``).

1,797 greyscale images of 8x8 pixels with values 0..16, bundled with scikit-learn (no
download). They are scaled to ``[-1, 1]`` (and optionally upsampled bilinearly to ``size x size``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

DIGIT_NAMES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_prompt(label: int) -> str:
    """The training prompt for class ``label``, e.g. ``"a handwritten digit three"``."""
    return f"a handwritten digit {DIGIT_NAMES[_check_label(label)]}"


def _check_label(label: Any) -> int:
    """A digit 0..9: a Python/numpy integer or a one-element integer tensor; 3.7 is an error, not 3."""
    from .validation import check_int

    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point() \
            and label.dtype != torch.bool:
        label = label.item()
    return check_int("digit label", label, minimum=0, maximum=9)


def load_digit_images(size: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """All 1,797 digits as a float32 tensor ``(N, 1, size, size)`` in ``[-1, 1]`` and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)  # [0, 1]
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1) * 2 - 1, data.target.astype(np.int64)


def real_digits(labels: list[int], size: int = 8, seed: int = 0, *, heldout_per_digit: int = 0) -> torch.Tensor:
    """One real dataset image per requested label, drawn reproducibly with ``seed``.

    ``heldout_per_digit = N > 0``: draw only from the ``N`` per class of :func:`heldout_indices`
    (the images ``load_model("digits-split")`` never saw in training).
    """
    images, targets = load_digit_images(size)
    labels = [_check_label(lab) for lab in labels]
    pool = np.ones(len(targets), dtype=bool)
    if heldout_per_digit:
        pool[:] = False
        pool[heldout_indices(heldout_per_digit)] = True
    rng = np.random.default_rng(seed)
    picks = [int(rng.choice(np.flatnonzero(pool & (targets == lab)))) for lab in labels]
    return images[picks]


def real_digit_set(per_digit: int = 10, seed: int = 0, size: int = 8) -> tuple[torch.Tensor, list[int]]:
    """``per_digit`` *distinct* dataset images of each digit 0..9 (drawn without replacement).

    Returns images ``(10 * per_digit, 1, size, size)`` in ``[-1, 1]``, ordered digit by digit,
    and their labels. The draw depends only on ``seed``. (Unlike :func:`real_digits`, which
    draws one image per requested label and may repeat an image.)
    """
    from .validation import check_int

    per_digit = check_int("per_digit", per_digit, minimum=1)  # 2.5 is an error, never silently 2
    images, targets = load_digit_images(size)
    counts = np.bincount(targets, minlength=10)
    if not 1 <= per_digit <= int(counts.min()):
        raise ValueError(f"per_digit must be in 1..{int(counts.min())} (the rarest digit's count), got {per_digit}")
    rng = np.random.default_rng(seed)
    picks = [int(i) for d in range(10) for i in rng.choice(np.flatnonzero(targets == d), per_digit, replace=False)]
    return images[picks], [int(targets[i]) for i in picks]


#: The seed of the digits' held-out split (:func:`heldout_indices`); fixed so that a split model and
#: its measurement always agree on which images were kept out.
HOLDOUT_SEED = 1797


def heldout_indices(per_digit: int = 50, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """Dataset indices of ``per_digit`` images of each digit kept out of training.

    ``python -m cfginv_lite.models.train_digits --holdout-per-digit N`` trains on every image
    *but* these (the shipped model trains on all 1,797, so for it every dataset digit is a
    training image). Sorted, deterministic in ``(per_digit, seed)``.
    """
    from .validation import check_int

    images_count = np.bincount(load_digit_images(8)[1], minlength=10)
    per_digit = check_int("per_digit", per_digit, minimum=1, maximum=int(images_count.min()) - 1)
    _, targets = load_digit_images(8)
    rng = np.random.default_rng(seed)
    picks = [i for d in range(10) for i in rng.choice(np.flatnonzero(targets == d), per_digit, replace=False)]
    return np.sort(np.asarray(picks, dtype=np.int64))


def split_digit_set(which: str, per_digit: int = 10, *, holdout_per_digit: int = 50, seed: int = 0,
                    size: int = 8) -> tuple[torch.Tensor, list[int]]:
    """``per_digit`` distinct images of each digit from the ``"heldout"`` or ``"train"`` side of the
    split of :func:`heldout_indices` (``holdout_per_digit`` per class kept out), ordered digit by
    digit; the draw depends only on ``seed``."""
    from .validation import check_choice, check_int

    check_choice("which", which, ("heldout", "train"))
    per_digit = check_int("per_digit", per_digit, minimum=1)
    images, targets = load_digit_images(size)
    held = np.zeros(len(targets), dtype=bool)
    held[heldout_indices(holdout_per_digit)] = True
    pool = held if which == "heldout" else ~held
    rng = np.random.default_rng(seed)
    picks = []
    for d in range(10):
        candidates = np.flatnonzero(pool & (targets == d))
        if per_digit > len(candidates):
            raise ValueError(f"per_digit must be at most {len(candidates)} for the {which} side, got {per_digit}")
        picks += [int(i) for i in rng.choice(candidates, per_digit, replace=False)]
    return images[picks], [int(targets[i]) for i in picks]


def train_digit_classifier(seed: int = 0, *, heldout_per_digit: int = 0):
    """An SVM (RBF) fitted on all real digits at 8x8, the classic scikit-learn recipe.

    Used to check that generated digits are recognisable. Returns a function mapping images
    ``(B, 1, S, S)`` in ``[-1, 1]`` to predicted labels (images are resized to 8x8 first).
    ``heldout_per_digit = N > 0`` fits it without :func:`heldout_indices` ``(N)``: the judge
    of ``load_model("digits-split")`` sees only that model's training digits.
    """
    from sklearn.svm import SVC

    images, targets = load_digit_images(8)
    if heldout_per_digit:
        keep = np.ones(len(targets), dtype=bool)
        keep[heldout_indices(heldout_per_digit)] = False
        images, targets = images[torch.from_numpy(keep)], targets[keep]
    clf = SVC(gamma=0.001, C=10.0, random_state=seed)
    clf.fit(_features(images), targets)

    def predict(batch: torch.Tensor) -> np.ndarray:
        batch = batch.detach().float().cpu()
        if batch.shape[-1] != 8:
            batch = F.interpolate(batch, size=(8, 8), mode="area")
        return clf.predict(_features(batch))

    return predict


def _features(images: torch.Tensor) -> np.ndarray:
    # back to the dataset's 0..16 units, where gamma=0.001 is the tuned value
    return ((images.clamp(-1, 1) + 1) * 8).flatten(1).numpy()
