"""``sampling``: seeded noise and generation accept numpy numbers and iterators, and refuse bad seeds clearly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.sampling import generate, seeded_noise

PROMPT = "a handwritten digit three"


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def test_numpy_steps_and_seeds_are_accepted(digits_model):
    grid = cl.timestep_grid(np.int64(2), "leading")
    a = generate(digits_model, [PROMPT], np.float32(3.0), grid, seed=np.int64(7))
    b = generate(digits_model, [PROMPT], 3.0, grid, seed=7)
    assert torch.equal(a.images, b.images)
    assert seeded_noise((1, 1, 2, 2), 2**64 - 1).shape == (1, 1, 2, 2)   # the top of the seed range


@pytest.mark.parametrize("seed, message", [(2**70, "64-bit"), (-1, r"\[0, 2\*\*64 - 1\]"), (2.5, "integer"),
                                           ("3", "integer")])
def test_bad_seeds_give_a_clear_message(seed, message):
    with pytest.raises(ValueError, match=message):
        seeded_noise((1, 1, 8, 8), seed)


def test_generate_accepts_an_iterator_grid(digits_model):
    grid = cl.timestep_grid(3)
    gen = generate(digits_model, [PROMPT], 3.0, iter(grid), seed=0)
    assert gen.grid == grid
    assert torch.equal(gen.images, generate(digits_model, [PROMPT], 3.0, grid, seed=0).images)
