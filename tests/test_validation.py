"""``validation``: the argument checks the models share."""
from __future__ import annotations

import pytest
import torch

from cfginv_lite.models import digits as digits_module


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def test_digits_and_sd_share_one_image_check(digits_model):
    from cfginv_lite.validation import check_image_batch

    assert "check_image_batch" in digits_module.DigitsModel.encode.__code__.co_names
    from cfginv_lite.models import stable_diffusion

    assert "check_image_batch" in stable_diffusion.StableDiffusionModel._check_images.__code__.co_names
    with pytest.raises(ValueError, match="NaN|\\[-1, 1\\]"):
        check_image_batch(torch.full((1, 1, 8, 8), float("nan")), channels=1)
