"""Exact-by-construction inversion (EDICT, BDIA) and the fixed-point family with a per-step budget."""
from __future__ import annotations

import copy

import pytest
import torch

from cfginv_lite import load_model, make_guidance, timestep_grid
from cfginv_lite.ddim import invert_naive, sample_ddim
from cfginv_lite.guidance import Guidance
from cfginv_lite.exact import invert_bdia, invert_edict, sample_bdia, sample_edict
from cfginv_lite.methods import EXACT_WRT, METHODS, run_method
from cfginv_lite.fixed_point import HARD_LEVELS, budget_on_levels, invert_fixed_point
from cfginv_lite.sampling import regenerate

NAIVE_KEYS = {"step", "steps", "t_from", "t_to", "label_uncond", "label_cond", "latent", "latent_prev", "noise",
              "residual", "nfe"}


@pytest.fixture(scope="module")
def digits():
    model = load_model("digits")
    z = torch.randn(4, *model.latent_shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    guidance = make_guidance(model, ["a handwritten digit three"] * 4, 7.5)
    return model, z, guidance


@pytest.fixture(scope="module")
def digits64(digits):
    model = copy.deepcopy(digits[0])
    model.unet.double()
    model.dtype = torch.float64
    return model


def _pair(method, model, z, grid, g, **kw):
    inverse, sampler = {"edict": (invert_edict, sample_edict), "bdia": (invert_bdia, sample_bdia)}[method]
    a, b = inverse(model, z, grid, g, progress=False, **kw)
    return a, b, sampler(model, a, grid, g, partner=b, progress=False, **kw)


@pytest.mark.parametrize("method, kw", [("edict", {}), ("edict", {"mix": 0.8}), ("bdia", {}), ("bdia", {"gamma": 0.7})])
def test_round_trip_with_own_sampler_is_exact_in_float64(digits, digits64, method, kw):
    _, z, g = digits
    a, b, rec = _pair(method, digits64, z.double(), timestep_grid(10), g, **kw)
    scale = max(1.0, float(a.abs().max()))          # gamma < 1 inflates the pair; errors are relative to it
    assert float((rec - z.double()).abs().max()) < 1e-9 * scale
    assert float((a - z.double()).abs().mean()) > 0.1   # and the pair really is noise, not the input


@pytest.mark.slow
@pytest.mark.parametrize("method", ["edict", "bdia"])
def test_round_trip_in_float32_is_at_round_off_far_below_ddim_exact_solvers(digits, method):
    model, z, g = digits
    grid = timestep_grid(20)
    _, _, rec = _pair(method, model, z, grid, g)
    err = float((rec - z).abs().max())
    assert err < 1e-2                                  # measured ~5e-4 (round-off amplified over 20 steps)
    anderson = sample_ddim(model, invert_fixed_point(model, z, grid, g, budget=5, window=3, progress=False), grid, g,
                          progress=False)
    assert float((anderson - z).abs().max()) > 10 * err


def test_ddim_regeneration_of_an_exact_pair_is_not_exact(digits):
    model, z, g = digits
    grid = timestep_grid(20)
    x, _ = invert_edict(model, z, grid, g, progress=False)
    zn, _ = invert_bdia(model, z, grid, g, progress=False)
    for noise in (x, zn):
        assert float((sample_ddim(model, noise, grid, g, progress=False) - z).abs().mean()) > 0.01


def test_bdia_from_noise_starts_with_a_ddim_step_and_gamma_zero_limit_is_ddim(analytic_model):
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    g = make_guidance(analytic_model, ["ab", "abc"], 3.0)
    one_step = [0, 500]
    assert torch.equal(sample_bdia(analytic_model, z, one_step, g, progress=False),
                       sample_ddim(analytic_model, z, one_step, g, progress=False))
    grid = timestep_grid(5)
    near = sample_bdia(analytic_model, z, grid, g, gamma=1e-9, progress=False)
    assert torch.allclose(near, sample_ddim(analytic_model, z, grid, g, progress=False), atol=1e-5)


def test_analytic_round_trips_and_edict_partner_default(analytic_model):
    z = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = make_guidance(analytic_model, ["a", "bb", "ccc"], 5.0)
    grid = timestep_grid(8)
    for method in ("edict", "bdia"):
        _, _, rec = _pair(method, analytic_model, z, grid, g)
        assert torch.allclose(rec, z, atol=1e-10)
    assert torch.equal(sample_edict(analytic_model, z, grid, g, progress=False),
                       sample_edict(analytic_model, z, grid, g, partner=z, progress=False))


def test_callbacks_and_nfe(analytic_model):
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    g = make_guidance(analytic_model, ["a", "b"], 3.0)
    grid = timestep_grid(6)
    for fn, per_step, sample in ((invert_edict, 4, sample_edict), (invert_bdia, 2, sample_bdia)):
        rows: list[dict] = []
        a, b = fn(analytic_model, z, grid, g, callback=rows.append, progress=False)
        assert len(rows) == 6 and NAIVE_KEYS | {"partner"} <= set(rows[0]) and (rows[-1]["nfe"] == 6 * per_step).all()
        assert torch.equal(rows[-1]["latent"], a) and torch.equal(rows[-1]["partner"], b)
        rows.clear()
        sample(analytic_model, a, grid, g, partner=b, callback=rows.append, progress=False)
        assert (rows[-1]["nfe"] == (6 * per_step if fn is invert_edict else 5 * per_step)).all()  # BDIA skips its DDIM start


@pytest.mark.parametrize("fn, kwargs, message", [
    (invert_edict, {"mix": 0.5}, "mixing weight"),
    (invert_edict, {"mix": 1.5}, "mixing weight"),
    (invert_edict, {"mix": float("nan")}, "mix"),
    (invert_bdia, {"gamma": 0.0}, "gamma"),
    (invert_bdia, {"gamma": -1.0}, "gamma"),
    (invert_bdia, {"gamma": "1"}, "gamma"),
    (sample_edict, {"partner": torch.zeros(1, 1, 4, 4)}, "partner"),
    (sample_bdia, {"partner": torch.zeros(2, 1, 3, 3)}, "shape"),
    (sample_bdia, {"partner": torch.full((2, 1, 4, 4), float("nan"))}, "NaN"),
    (invert_fixed_point, {"budget": [4, 4]}, "budget has 2 entries"),
    (invert_fixed_point, {"budget": lambda grid: [1]}, "budget has 1 entries"),
    (invert_fixed_point, {"warm_start": "yes"}, "warm_start"),
])
def test_bad_options_raise(analytic_model, fn, kwargs, message):
    z = torch.zeros(2, 1, 4, 4)
    g = make_guidance(analytic_model, ["a", "b"], 3.0)
    with pytest.raises(ValueError, match=message):
        fn(analytic_model, z, timestep_grid(4), g, progress=False, **kwargs)


@pytest.mark.parametrize("fn", [invert_edict, sample_edict, invert_bdia, sample_bdia, invert_fixed_point])
def test_bad_latents_grid_and_guidance_raise(analytic_model, fn):
    g = make_guidance(analytic_model, ["a"], 3.0)
    with pytest.raises(ValueError, match="shape"):
        fn(analytic_model, torch.zeros(1, 2, 4, 4), timestep_grid(4), g, progress=False)
    with pytest.raises(ValueError, match="increasing"):
        fn(analytic_model, torch.zeros(1, 1, 4, 4), [0, 500, 400], g, progress=False)
    with pytest.raises(ValueError, match="Guidance"):
        fn(analytic_model, torch.zeros(1, 1, 4, 4), timestep_grid(4), 7.5, progress=False)


def test_budgeted_with_no_iterations_is_naive_destination_and_its_default_cost(analytic_model):
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    g = make_guidance(analytic_model, ["a", "b"], 3.0)
    grid = timestep_grid(10)
    naive = invert_naive(analytic_model, z, grid, g, label="destination", progress=False)
    for ws in (False, True):   # no iterations: warm start has nothing to start
        assert torch.equal(invert_fixed_point(analytic_model, z, grid, g, budget=0, window=3, warm_start=ws,
                                              progress=False), naive)
    rows: list[dict] = []
    invert_fixed_point(analytic_model, z, timestep_grid(20), g, budget=budget_on_levels(4, HARD_LEVELS, 2), window=3,
                       divergence_factor=None, callback=rows.append, progress=False)
    assert int(rows[-1]["nfe"].max()) == 148   # 40 + 4 it x 7 steps (levels <= 349) x 2 + 2 it x 13 steps x 2


def test_budgeted_warm_start_changes_the_first_iterate_of_refined_steps_only(analytic_model):
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    g = make_guidance(analytic_model, ["a", "b"], 7.5)
    grid = timestep_grid(6)
    cold = invert_fixed_point(analytic_model, z, grid, g, budget=1, window=3, progress=False)
    warm = invert_fixed_point(analytic_model, z, grid, g, budget=1, window=3, warm_start=True, progress=False)
    assert not torch.equal(cold, warm)


def test_budgeted_spends_iterations_on_the_noisy_levels_only(analytic_model):
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    g = make_guidance(analytic_model, ["a", "b"], 3.0)
    rows: list[dict] = []
    invert_fixed_point(analytic_model, z, timestep_grid(20), g, budget=budget_on_levels(4, (700, 950), 0), window=3,
                       callback=rows.append, progress=False)
    refined = [r["t_to"] for r in rows if int(r["iterations"].max()) > 0]
    assert refined and all(700 <= t <= 950 for t in refined)
    assert int(rows[-1]["nfe"].max()) <= 40 + 2 * 4 * len(refined)


def test_registry_runs_the_new_methods_with_their_own_sampler(digits):
    model, z, g = digits
    grid = timestep_grid(10)
    for name, nfe in (("edict", 40), ("bdia", 20), ("focused", None)):
        assert name in EXACT_WRT
        res = run_method(name, model, z, grid, g)
        if nfe is not None:
            assert res.nfe == nfe and res.partner is not None
            assert float((regenerate(model, res, grid, sampler="own") - z).abs().max()) < 1e-2
        else:
            assert res.sampler is None and res.partner is None
    assert set(EXACT_WRT) == set(METHODS)


def test_evaluate_regenerates_with_the_own_sampler(digits):
    from cfginv_lite.evidence import InputSet, evaluate_samplers

    model, z, _ = digits
    inputs = InputSet("x", z, z, ["a handwritten digit three"] * 4, [3] * 4)
    out = evaluate_samplers(model, [inputs], 7.5, timestep_grid(10), "bdia", samplers=("own", "ddim"))
    assert out["own"]["x"].image_rmse.max() < 1e-3 < out["ddim"]["x"].image_rmse.min()
    with pytest.raises(ValueError, match="samplers"):
        evaluate_samplers(model, [inputs], 7.5, timestep_grid(10), "bdia", samplers=("euler",))


def test_own_sampler_of_a_ddim_method_is_ddim(digits):
    model, z, g = digits
    grid = timestep_grid(5)
    res = run_method("naive", model, z, grid, g)
    assert torch.equal(regenerate(model, res, grid, sampler="own"), sample_ddim(model, res.latents, grid, g, progress=False))
    with pytest.raises(ValueError, match='needs the InversionResult'):
        regenerate(model, res.latents, grid, g, sampler="own")
    assert isinstance(res.guidance, Guidance)
