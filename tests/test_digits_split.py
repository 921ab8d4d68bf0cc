"""The shipped digits-split model: trained without the held-out digits, whose real set is those digits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.cli import compare
from cfginv_lite.data import HOLDOUT_SEED, heldout_indices, load_digit_images, real_digits
from cfginv_lite.evidence import digit_sets
from cfginv_lite.models.digits import SPLIT_WEIGHTS_DIR


def _dataset_index(images: torch.Tensor) -> list[int]:
    """The dataset index of each image (exact match; the 8x8 digits are distinct pixel arrays)."""
    data = load_digit_images(8)[0].flatten(1)
    out = []
    for img in images.flatten(1):
        hits = torch.nonzero((data == img).all(1)).flatten().tolist()
        assert hits, "an image that is not a dataset digit"
        out += hits[:1]
    return out


def test_shipped_split_model_was_trained_without_the_heldout_digits() -> None:
    info = json.loads((SPLIT_WEIGHTS_DIR / "digits.json").read_text())
    assert info["holdout_per_digit"] == 50 and info["holdout_seed"] == HOLDOUT_SEED
    assert info["train_images"] == 1797 - 500
    model = cl.load_model("digits-split")
    assert model.name == "digits-split" and "digits-split" in cl.MODEL_NAMES
    shipped = cl.load_model("digits")                     # a different network, not a copy
    assert not torch.equal(next(model.unet.parameters()), next(shipped.unet.parameters()))


def test_its_real_images_are_the_heldout_digits_and_the_digits_model_keeps_its_own() -> None:
    grid = cl.timestep_grid(5)
    held = set(heldout_indices(50).tolist())
    split_real = digit_sets(cl.load_model("digits-split"), 3.0, grid, per_digit=10, cases=["real"])["real"]
    picked = _dataset_index(split_real.images)
    assert len(set(picked)) == 100 and set(picked) <= held
    assert split_real.labels == [d for d in range(10) for _ in range(10)]
    digits_real = digit_sets(cl.load_model("digits"), 3.0, grid, per_digit=10, cases=["real"])["real"]
    assert not set(_dataset_index(digits_real.images)) <= held     # the shipped model's set: any dataset digit


def test_real_digits_can_draw_from_the_heldout_side_only() -> None:
    labels = [d for d in range(10) for _ in range(5)]
    picked = _dataset_index(real_digits(labels, seed=3, heldout_per_digit=50))
    assert set(picked) <= set(heldout_indices(50).tolist())
    _, targets = load_digit_images(8)
    assert [int(targets[i]) for i in picked] == labels


def test_compare_on_digits_split_inverts_its_heldout_digits() -> None:
    rows = compare("digits-split", cfgs=(1.0,), steps_list=(3,), methods=("naive",), images_per_digit=1, real=True,
                   progress=False)
    real = [r for r in rows if r["set"] == "real"]
    assert len(real) == 1 and np.isfinite(real[0]["image_rmse"])


def test_split_model_takes_no_weights_dir() -> None:
    with pytest.raises(ValueError, match="digits-split"):
        cl.load_model("digits-split", weights_dir="elsewhere")
