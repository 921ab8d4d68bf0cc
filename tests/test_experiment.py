"""``experiment``: reconstruction helpers and the digit prompts."""
from __future__ import annotations

import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.experiment import reconstruct, reconstruct_samplers
from cfginv_lite.sampling import generate

PROMPT = "a handwritten digit three"


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def test_a_string_prompt_is_one_prompt(digits_model):
    grid = cl.timestep_grid(2)
    gen = generate(digits_model, PROMPT, 3.0, grid, seed=0)
    assert gen.images.shape[0] == 1 and gen.prompts == [PROMPT]
    rec = reconstruct(digits_model, gen.images, PROMPT, 3.0, grid)
    assert rec.regenerated.shape[0] == 1
    recs = reconstruct_samplers(digits_model, gen.images, PROMPT, 3.0, grid, samplers=("ddim",))
    assert recs["ddim"].regenerated.shape[0] == 1
    as_list = generate(digits_model, [PROMPT], 3.0, grid, seed=0)
    assert torch.equal(as_list.images, gen.images)


@pytest.mark.parametrize("args, message", [
    ((2.5,), "images_per_digit must be an integer >= 1, got 2.5"),
    ((True,), "images_per_digit must be an integer >= 1, got True"),
    ((0,), "images_per_digit must be an integer >= 1, got 0"),
    ((1, [10]), "digits must be whole numbers from 0 to 9"),
    ((1, [3.0]), "digits must be whole numbers from 0 to 9"),
])
def test_digit_prompts_rejects_bad_counts_and_digits(args, message):
    from cfginv_lite.experiment import digit_prompts
    with pytest.raises(ValueError, match=message):
        digit_prompts(*args)
    assert digit_prompts(2, [7]) == (["a handwritten digit seven"] * 2, [7, 7])
