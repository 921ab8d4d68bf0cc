"""The DDIM core: the move, schedules, grids, batched guidance, solvers, and input checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.ddim import abar_at, epsilon_to_v, predicted_x0, v_to_epsilon
from cfginv_lite.validation import check_grid, check_latents

PROMPT = "a handwritten digit three"


def test_schedule_matches_sd_scaled_linear():
    abar = cl.alphas_cumprod_from_config(cl.SD1_SCHEDULER_CONFIG)
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    expected = np.cumprod(1 - betas)
    assert abar.shape == (1000,)
    np.testing.assert_allclose(abar.numpy(), expected, rtol=1e-6)


def test_linspace_grid_is_the_originals():
    grid = cl.timestep_grid(50)
    assert grid == [int(v) for v in np.linspace(0, 999, 51)]
    assert len(grid) == 51 and grid[0] == 0 and grid[-1] == 999


@pytest.mark.parametrize("spacing, expected_head, expected_tail", [
    ("leading", [0, 1, 21], 981), ("trailing", [0, 19, 39], 999)])
def test_diffusers_grids(spacing, expected_head, expected_tail):
    grid = cl.timestep_grid(50, spacing)
    assert grid[:3] == expected_head and grid[-1] == expected_tail and len(grid) == 51


def test_move_forward_then_back_is_identity():
    torch.manual_seed(0)
    abar = cl.alphas_cumprod_from_config(cl.SD1_SCHEDULER_CONFIG)
    z, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    for s, r in [(0, 20), (500, 520), (0, 999), (979, 999)]:
        there = cl.move(z, eps, float(abar[s]), float(abar[r]))
        back = cl.move(there, eps, float(abar[r]), float(abar[s]))
        assert torch.allclose(back, z, atol=1e-5, rtol=1e-5), (s, r, (back - z).abs().max())
        # and it really moved
        assert (there - z).abs().max() > 1e-3


def test_move_recovers_exact_noising():
    """With the true noise, moving x0 (level 0) to t reproduces a_t x0 + b_t eps exactly."""
    abar = cl.alphas_cumprod_from_config(cl.SD1_SCHEDULER_CONFIG)
    torch.manual_seed(1)
    x0, eps = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    z0 = abar[0].sqrt() * x0 + (1 - abar[0]).sqrt() * eps
    z_t = cl.move(z0, eps, float(abar[0]), float(abar[600]))
    assert torch.allclose(z_t, abar[600].sqrt() * x0 + (1 - abar[600]).sqrt() * eps, atol=1e-12)
    assert torch.allclose(predicted_x0(z_t, eps, float(abar[600])), x0, atol=1e-10)


def test_v_prediction_round_trip():
    torch.manual_seed(2)
    z, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    abar = torch.tensor([0.9, 0.5, 0.01])
    v = epsilon_to_v(eps, z, abar)
    assert torch.allclose(v_to_epsilon(v, z, abar), eps, atol=1e-5)


def test_abar_at_interpolates_fractional_labels():
    abar = cl.alphas_cumprod_from_config(cl.SD1_SCHEDULER_CONFIG)
    got = abar_at(abar, torch.tensor([10.0, 10.25, 999.0]))
    assert got[0] == abar[10] and got[2] == abar[999]
    assert abar[11] < got[1] < abar[10]


def test_one_batched_call_equals_two_separate_calls(analytic_model):
    g = cl.make_guidance(analytic_model, ["ab", "abcd"], 4.0)
    z = torch.randn(2, *analytic_model.latent_shape)
    analytic_model.calls.clear()
    est = cl.guided_noise(analytic_model, z, 300.0, 320.0, g)
    assert analytic_model.calls == [4], "both branches of both images go through ONE call"
    eu = analytic_model.predict_noise(z, torch.full((2,), 300.0), g.uncond)
    ec = analytic_model.predict_noise(z, torch.full((2,), 320.0), g.cond)
    assert torch.allclose(est.uncond, eu) and torch.allclose(est.cond, ec)
    assert torch.allclose(est.guided, eu + 4.0 * (ec - eu))


def test_batched_call_matches_separate_calls_on_digits_model(digits_model):
    g = cl.make_guidance(digits_model, ["a handwritten digit seven"], 5.0)
    z = torch.randn(1, *digits_model.latent_shape, generator=torch.Generator().manual_seed(0))
    est = cl.guided_noise(digits_model, z, 495.25, 500.0, g)
    with torch.no_grad():
        eu = digits_model.predict_noise(z, torch.tensor([495.25]), g.uncond)
        ec = digits_model.predict_noise(z, torch.tensor([500.0]), g.cond)
    assert torch.allclose(est.guided, eu + 5.0 * (ec - eu), atol=1e-5)


def test_solvers_report_every_step(analytic_model):
    g = cl.make_guidance(analytic_model, ["abc"], 2.0)
    z = torch.randn(1, *analytic_model.latent_shape)
    seen = []
    grid = cl.timestep_grid(7)
    cl.invert_naive(analytic_model, z, grid, g, callback=seen.append, progress=False)
    assert [d["step"] for d in seen] == list(range(7))
    assert [d["t_from"] for d in seen] == grid[:-1] and [d["t_to"] for d in seen] == grid[1:]
    assert (seen[-1]["nfe"] == 14).all() and seen[0]["label_cond"] == grid[0]
    seen.clear()
    cl.invert_naive(analytic_model, z, grid, g, label="destination", callback=seen.append, progress=False)
    assert seen[0]["label_cond"] == grid[1]
    seen.clear()
    cl.sample_ddim(analytic_model, z, grid, g, callback=seen.append, progress=False)
    assert seen[0]["t_from"] == 999 and seen[-1]["t_to"] == 0


def test_naive_inversion_is_exact_when_noise_does_not_depend_on_z():
    """If eps does not depend on z or t, the naive step is exact: inversion undoes sampling."""

    class ConstantNoise:
        name, latent_shape, device, dtype = "const", (1, 3, 3), torch.device("cpu"), torch.float32
        alphas_cumprod = cl.alphas_cumprod_from_config(cl.SD1_SCHEDULER_CONFIG)

        def predict_noise(self, latents, labels, embeddings):
            return torch.ones_like(latents) * 0.3 + embeddings.mean() * 0

    model = ConstantNoise()
    g = cl.Guidance(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), 7.5)
    z_T = torch.randn(1, 1, 3, 3)
    grid = cl.timestep_grid(10)
    x0 = cl.sample_ddim(model, z_T, grid, g, progress=False)
    assert torch.allclose(cl.invert_naive(model, x0, grid, g, progress=False), z_T, atol=1e-4)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_steps(bad):
    with pytest.raises(ValueError, match="steps"):
        cl.timestep_grid(bad)


def test_unknown_spacing():
    with pytest.raises(ValueError, match="spacing"):
        cl.timestep_grid(10, "cosine")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "7", None])
def test_bad_guidance_scale(analytic_model, bad):
    with pytest.raises(ValueError, match="guidance scale"):
        cl.make_guidance(analytic_model, ["a"], bad)


def test_bad_latents(analytic_model):
    g = cl.make_guidance(analytic_model, ["a"], 1.0)
    grid = cl.timestep_grid(3)
    with pytest.raises(ValueError, match="shape"):
        cl.invert_naive(analytic_model, torch.zeros(1, 4, 4), grid, g, progress=False)
    with pytest.raises(ValueError, match="shape"):
        cl.invert_naive(analytic_model, torch.zeros(1, 2, 4, 4), grid, g, progress=False)
    with pytest.raises(ValueError, match="floating"):
        cl.invert_naive(analytic_model, torch.zeros(1, 1, 4, 4, dtype=torch.long), grid, g, progress=False)
    with pytest.raises(ValueError, match="torch.Tensor"):
        cl.sample_ddim(analytic_model, np.zeros((1, 1, 4, 4)), grid, g, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        cl.sample_ddim(analytic_model, torch.full((1, 1, 4, 4), float("nan")), grid, g, progress=False)
    with pytest.raises(ValueError, match="increasing"):
        cl.sample_ddim(analytic_model, torch.zeros(1, 1, 4, 4), [0, 500, 400], g, progress=False)
    with pytest.raises(ValueError, match="label"):
        cl.invert_naive(analytic_model, torch.zeros(1, 1, 4, 4), grid, g, label="middle", progress=False)


def test_non_finite_guard_names_the_step():
    class Exploding:
        name, latent_shape, device, dtype = "boom", (1, 2, 2), torch.device("cpu"), torch.float32
        alphas_cumprod = cl.alphas_cumprod_from_config(cl.SD1_SCHEDULER_CONFIG)

        def predict_noise(self, latents, labels, embeddings):
            bad = labels[0] >= 499
            return torch.full_like(latents, float("inf") if bad else 0.1)

    g = cl.Guidance(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), 3.0)
    with pytest.raises(cl.NonFiniteLatentError, match="step 5 \\(level 499"):
        cl.invert_naive(Exploding(), torch.zeros(1, 1, 2, 2), cl.timestep_grid(10), g, progress=False)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model name"):
        cl.load_model("imagen")


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def test_empty_batch_is_rejected_up_front(digits_model, analytic_model):
    g = cl.make_guidance(digits_model, [PROMPT], 3.0)
    with pytest.raises(ValueError, match="empty"):
        cl.sample_ddim(digits_model, torch.zeros(0, 1, 8, 8), cl.timestep_grid(2), g, progress=False)
    with pytest.raises(ValueError, match="empty"):
        cl.invert_naive(analytic_model, torch.zeros(0, 1, 4, 4), cl.timestep_grid(2),
                        cl.make_guidance(analytic_model, ["a"], 1.0), progress=False)
    with pytest.raises(ValueError, match="empty"):
        digits_model.encode(torch.zeros(0, 1, 8, 8))
    with pytest.raises(ValueError, match="empty"):
        check_latents(digits_model, torch.zeros(0, 1, 8, 8))


@pytest.mark.parametrize("scale", [np.float32(3.5), np.float16(2.0), np.int64(3), np.float64(7.5),
                                   torch.tensor(3.5)])
def test_numpy_guidance_scales_are_accepted(analytic_model, scale):
    g = cl.make_guidance(analytic_model, ["a"], scale)
    assert type(g.scale) is float and g.scale == float(scale)
    assert type(cl.Guidance(g.cond, g.uncond, scale).scale) is float


@pytest.mark.parametrize("bad", [np.bool_(True), True, "3", None, float("nan"), -1.0, np.float32("inf")])
def test_bad_guidance_scales_stay_rejected(analytic_model, bad):
    with pytest.raises(ValueError, match="guidance scale"):
        cl.make_guidance(analytic_model, ["a"], bad)


def test_fractional_grid_levels_are_not_truncated():
    with pytest.raises(ValueError, match="integers"):
        check_grid([0, 10.5, 20], 1000)
    with pytest.raises(ValueError, match="sequence"):
        check_grid("0123", 1000)
    assert check_grid([np.int64(0), 10.0, torch.tensor(20)], 1000) == [0, 10, 20]


@pytest.mark.parametrize("prompts, message", [(None, "string or a list"), ([], "empty"), ([PROMPT, 3], "strings"),
                                              (b"abc", "string or a list"), ({PROMPT}, "string or a list")])
def test_bad_prompt_containers(analytic_model, prompts, message):
    with pytest.raises(ValueError, match=message):
        cl.make_guidance(analytic_model, prompts, 1.0)


def test_bad_negative_prompts(analytic_model):
    with pytest.raises(ValueError, match="negative_prompts"):
        cl.make_guidance(analytic_model, ["a", "b"], 1.0, negative_prompts=[None, ""])


def test_solvers_name_a_missing_guidance(digits_model):
    with pytest.raises(ValueError, match="make_guidance"):
        cl.sample_ddim(digits_model, torch.zeros(1, 1, 8, 8), [0, 500], 7.5, progress=False)
