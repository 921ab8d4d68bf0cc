"""Per-step diagnostics of naive inversion, on models where the answer is known."""
from __future__ import annotations

import torch

import cfginv_lite as cl
from cfginv_lite import diagnostics as dg


class ConstantNoise:
    """``eps`` independent of ``z`` and ``t``: the naive step is exact, the noise never changes."""

    name, latent_shape, device, dtype = "const", (1, 3, 3), torch.device("cpu"), torch.float64
    alphas_cumprod = cl.alphas_cumprod_from_config(cl.SD1_SCHEDULER_CONFIG)

    def predict_noise(self, latents, labels, embeddings):
        return torch.full_like(latents, 0.3) + embeddings.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def _setup(model, scale=3.0, batch=2):
    g = cl.Guidance(torch.zeros(batch, 1, 1, dtype=torch.float64), torch.ones(batch, 1, 1, dtype=torch.float64),
                    scale)
    noise = torch.randn(batch, *model.latent_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return g, noise, cl.timestep_grid(5)


def test_sampling_trajectory_is_ascending_and_ends_in_the_noise(digits_model):
    g = cl.make_guidance(digits_model, ["a handwritten digit two"] * 2, 3.0)
    noise = torch.randn(2, *digits_model.latent_shape, generator=torch.Generator().manual_seed(0))
    grid = cl.timestep_grid(5)
    traj = dg.sampling_trajectory(digits_model, noise, grid, g)
    assert traj.shape == (6, 2, *digits_model.latent_shape)
    assert torch.equal(traj[-1], noise)
    assert torch.equal(traj[0], cl.sample_ddim(digits_model, noise, grid, g, progress=False))


def test_everything_vanishes_when_the_noise_does_not_depend_on_z_or_t():
    model = ConstantNoise()
    g, noise, grid = _setup(model)
    traj = dg.sampling_trajectory(model, noise, grid, g)
    assert dg.local_inversion_errors(model, traj, grid, g).abs().max() < 1e-12
    assert dg.implicit_residuals(model, traj[:-1], traj[1:], grid, g).abs().max() < 1e-12
    assert torch.equal(dg.noise_change_between_levels(model, traj, grid, g), torch.zeros(5, 2, dtype=torch.float64))


def test_true_trajectory_solves_the_implicit_equation_and_naive_steps_do_not(digits_model):
    g = cl.make_guidance(digits_model, ["a handwritten digit five"] * 2, 7.5)
    noise = torch.randn(2, *digits_model.latent_shape, generator=torch.Generator().manual_seed(1))
    grid = cl.timestep_grid(8)
    traj = dg.sampling_trajectory(digits_model, noise, grid, g)
    true_res = dg.implicit_residuals(digits_model, traj[:-1], traj[1:], grid, g)
    local = dg.local_inversion_errors(digits_model, traj, grid, g)
    assert true_res.shape == local.shape == (8, 2)
    # DDIM sampling is the exact inverse of its own steps, up to float32 evaluation rounding (the
    # bound below: ~1e-5 per evaluation; measured 1.3e-6 natively, 1.7e-6 on the baseline x86-64 paths)
    assert true_res.max() < 1e-4
    assert local.min() > 1e3 * true_res.max()  # each naive step adds error at w = 7.5
    # The naive step with the source label is exactly what invert_naive does from the trajectory.
    one = cl.invert_naive(digits_model, traj[3], grid[3:5], g, progress=False)
    # Two batch sizes (4 rows here, 32 in local_inversion_errors) round differently in float32, by a
    # CPU-dependent amount (measured 4.5e-8 on RMSEs of ~0.05). Bound: one float32 evaluation of
    # eps (|eps| ~ 1) is within a few hundred ulp (2**-24 each), ~1e-5, of exact; 1e-5 is still
    # ~4000x below the local errors the test compares (> 0.04).
    assert torch.allclose((one - traj[4]).flatten(1).pow(2).mean(1).sqrt(), local[3], atol=1e-5)
    change = dg.noise_change_between_levels(digits_model, traj, grid, g)
    assert change.shape == (8, 2) and (change > 0).all()
