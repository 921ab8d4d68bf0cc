"""The attribution experiment's building blocks (notebook 03c) on the digits model."""
from __future__ import annotations

import pytest
import torch

import cfginv_lite as cl
from cfginv_lite import attribution as at
from cfginv_lite import diagnostics as dg
from cfginv_lite.evidence import digit_sets

pytestmark = pytest.mark.slow   # its module fixture alone takes ~8 s on one loaded CPU thread


@pytest.fixture(scope="module")
def setup(digits_model):
    grid = cl.timestep_grid(6)
    real = digit_sets(digits_model, 3.0, grid, per_digit=1, seed=0, cases=["real"])["real"]
    guidance = cl.make_guidance(digits_model, real.prompts, 3.0)
    return digits_model, grid, real, guidance


def test_trajectories_keep_every_level(setup):
    model, grid, real, guidance = setup
    naive = at.trajectory(model, real.latents, grid, guidance, exact=False)
    assert len(naive.levels) == len(grid) and torch.equal(naive.levels[0], real.latents)
    assert torch.equal(naive.levels[-1], cl.invert_naive(model, real.latents, grid, guidance, progress=False))


def test_all_exact_but_shortcut_matches_the_long_way(setup):
    """Solved steps are undone exactly by sampling, so skipping them changes only float rounding.

    That holds where the solves above step i converge: on this coarse 6-step grid the two
    lowest steps do not in 8 Anderson iterations, so the check starts above them.
    """
    model, grid, real, guidance = setup
    exact = at.trajectory(model, real.latents, grid, guidance, exact=True)
    residual = dg.implicit_residuals(model, torch.stack(exact.levels[:-1]), torch.stack(exact.levels[1:]), grid,
                                     guidance).max(1).values
    assert (residual[2:] < 1e-3).all() and residual[0] > 1e-2, "the premise of this test: which steps converge"
    for i in [2, 3, len(grid) - 2]:     # the long way re-solves only the steps above i
        short = at.all_exact_but(model, exact, i, guidance)
        long = at.all_exact_but(model, exact, i, guidance, shortcut=False)
        assert (short - long).abs().max() < 1e-3, i


def test_only_step_exact_changes_only_from_that_step(setup):
    model, grid, real, guidance = setup
    naive = at.trajectory(model, real.latents, grid, guidance, exact=False)
    regen_naive = cl.sample_ddim(model, naive.levels[-1], grid, guidance, progress=False)
    regen_fixed = at.only_step_exact(model, naive, 1, guidance)
    assert regen_fixed.shape == regen_naive.shape
    assert not torch.equal(regen_fixed, regen_naive), "solving a step changes the result"
