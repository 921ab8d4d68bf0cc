"""The statistics and the three input sets behind every comparison in the course."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.data import real_digit_set
from cfginv_lite.evidence import CASES, digit_sets, evaluate, evaluate_samplers, median_ratio, paired_ratio, spread


def test_spread_reports_median_quartiles_and_an_interval_that_contains_the_median():
    values = np.arange(1.0, 101.0)                     # 1..100
    s = spread(values)
    assert s.median == 50.5 and s.q25 == pytest.approx(25.75) and s.q75 == pytest.approx(75.25) and s.n == 100
    assert s.ci_low < s.median < s.ci_high
    assert spread(values, seed=1).median == s.median   # the bootstrap seed moves only the interval


def test_spread_interval_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    small, large = spread(rng.lognormal(size=20)), spread(rng.lognormal(size=2000))
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 3


@pytest.mark.parametrize("bad, match", [([], "empty"), ([1.0, np.nan], "non-finite")])
def test_spread_rejects_what_it_cannot_summarise(bad, match):
    with pytest.raises(ValueError, match=match):
        spread(bad)


def test_ratios_paired_and_unpaired():
    rng = np.random.default_rng(0)
    a = rng.lognormal(size=200)
    r = paired_ratio(2 * a, a)                          # every image exactly twice as bad
    assert r.median == pytest.approx(2.0) and r.ci_low == pytest.approx(2.0) and r.ci_high == pytest.approx(2.0)
    u = median_ratio(2 * a, a)
    assert u.median == pytest.approx(2.0) and u.ci_low < 2.0 < u.ci_high   # unpaired: images resampled apart
    with pytest.raises(ValueError, match="same images"):
        paired_ratio(a, a[:10])


def test_real_digit_set_draws_distinct_images_per_digit():
    images, labels = real_digit_set(10, seed=0)
    assert images.shape == (100, 1, 8, 8) and labels == [d for d in range(10) for _ in range(10)]
    assert len({tuple(x.flatten().tolist()) for x in images}) == 100
    again, _ = real_digit_set(10, seed=0)
    assert torch.equal(images, again)
    with pytest.raises(ValueError, match="per_digit"):
        real_digit_set(0)


def test_three_cases_and_one_batched_evaluation(digits_model):
    grid = cl.timestep_grid(3)
    sets = digit_sets(digits_model, 5.0, grid, per_digit=1, seed=0)
    assert list(sets) == list(CASES)
    assert torch.equal(sets["decoded"].images, sets["latent"].images)       # same generated digits
    assert torch.equal(sets["decoded"].latents, sets["latent"].images)      # decoded = clamped latents
    assert sets["latent"].true_noise is not None and sets["real"].true_noise is None
    both = evaluate_samplers(digits_model, sets, 5.0, grid, method="naive")
    ddim = evaluate(digits_model, sets, 5.0, grid, method="naive")
    for case in CASES:
        assert np.array_equal(both["ddim"][case].image_rmse, ddim[case].image_rmse)   # one inversion, reused
        assert ddim[case].image_rmse.shape == (10,) and ddim[case].nfe == 2 * 3
    assert ddim["latent"].latent_rmse.shape == (10,) and ddim["real"].latent_rmse is None
    with pytest.raises(ValueError, match="cases"):
        digit_sets(digits_model, 5.0, grid, cases=["photos"])


def test_a_method_passed_as_a_name_fn_pair_gives_the_numbers_of_its_registered_name(digits_model):
    """Exploration code passes ``(name, fn)`` instead of adding to the registry; the numbers are the same."""
    from functools import partial

    from cfginv_lite.ddim import invert_naive
    from cfginv_lite.methods import METHODS, run_solver

    grid = cl.timestep_grid(3)
    sets = digit_sets(digits_model, 5.0, grid, per_digit=1, seed=0, cases=("real", "latent"))
    by_name = evaluate(digits_model, sets, 5.0, grid, "naive-destination")
    mine = partial(run_solver, invert_naive, label="destination")   # written anew, not the registry's object
    by_fn = evaluate_samplers(digits_model, sets, 5.0, grid, ("mine", mine), samplers=("ddim",))
    source_label = evaluate(digits_model, sets, 5.0, grid, "naive")
    for case in sets:
        a, b = by_fn["ddim"][case], by_name[case]
        assert a.method == "mine" and b.method == "naive-destination" and a.nfe == b.nfe == 6
        assert torch.equal(a.inverted, b.inverted) and np.array_equal(a.image_rmse, b.image_rmse)
        assert np.array_equal(a.psnr, b.psnr)
        assert not np.array_equal(source_label[case].image_rmse, b.image_rmse)   # the pair was not ignored
    assert "mine" not in METHODS
    # options reach the function as they reach a registry entry
    options = dict(budget=2, window=2)
    pair = evaluate(digits_model, sets, 5.0, grid, ("anderson-2", METHODS["anderson"]), **options)["real"]
    named = evaluate(digits_model, sets, 5.0, grid, "anderson", **options)["real"]
    assert np.array_equal(pair.image_rmse, named.image_rmse) and pair.nfe == named.nfe


@pytest.mark.parametrize("bad", ["no-such-method", 42, ("naive",), ("", print), ("x", "naive"), ["x", print],
                                 ("x", print, "y"), None])
def test_a_bad_method_is_a_clear_error(digits_model, bad):
    grid = cl.timestep_grid(2)
    sets = digit_sets(digits_model, 5.0, grid, per_digit=1, seed=0, cases=("real",))
    with pytest.raises(ValueError, match="unknown method|registered name or a \\(name, fn\\) pair"):
        evaluate(digits_model, sets, 5.0, grid, bad)


def test_a_function_that_returns_no_inversion_result_is_a_clear_error(digits_model):
    grid = cl.timestep_grid(2)
    sets = digit_sets(digits_model, 5.0, grid, per_digit=1, seed=0, cases=("real",))
    returns_latents = ("latents", lambda model, latents, grid, guidance, **kwargs: latents)
    with pytest.raises(TypeError, match="'latents' returned Tensor, not an InversionResult"):
        evaluate(digits_model, sets, 5.0, grid, returns_latents)
# --------------------------------------------------------------------------- bad input (issue 20; was tests/test_bad_input.py)
@pytest.mark.parametrize("per_digit", [2.5, 1.5, True])
def test_fractional_per_digit_is_refused(per_digit, digits_model):
    from cfginv_lite.data import real_digit_set

    with pytest.raises(ValueError, match="per_digit must be an integer"):
        digit_sets(digits_model, 1.0, cl.timestep_grid(2), per_digit=per_digit, cases=("real",))
    with pytest.raises(ValueError, match="per_digit must be an integer"):
        real_digit_set(per_digit)
    assert len(digit_sets(digits_model, 1.0, cl.timestep_grid(2), per_digit=np.int64(1), cases=("real",))["real"]) == 10


def test_spread_needs_at_least_one_bootstrap_resample():
    with pytest.raises(ValueError, match="n_boot must be an integer >= 1"):
        spread([1.0, 2.0, 3.0], n_boot=0)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 1"):
        median_ratio([1.0, 2.0], [1.0, 2.0], n_boot=0)
    assert spread([1.0, 2.0, 3.0], n_boot=1).median == 2.0


def test_ratio_with_a_zero_median_is_an_error_not_inf():
    with pytest.raises(ValueError, match="median of b is 0"):
        median_ratio([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="b is 0 for 1 image"):
        paired_ratio([1.0, 2.0, 3.0], [0.0, 1.0, 1.0])


def test_ratio_interval_is_defined_when_some_resampled_medians_are_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # no divide-by-zero RuntimeWarning either
        r = median_ratio([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], n_boot=500)
    assert r.median == 2.0 and r.ci_high == np.inf and np.isfinite(r.ci_low)
