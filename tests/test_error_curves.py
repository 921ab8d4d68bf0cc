"""The per-step error curves of cfginv_lite.metrics that the step views draw (error_curve, error_curves)."""
from __future__ import annotations

import numpy as np
import pytest

from cfginv_lite.metrics import ErrorCurves, align_reference, error_curve, error_curves, solver_residual
from cfginv_lite.trace import Trace
from synthetic_traces import synthetic_trace as _trace


# --------------------------------------------------------------------------- error_curve
def test_error_curve_is_zero_against_itself_and_exact_for_a_known_offset() -> None:
    tr = _trace("a")
    assert np.array_equal(error_curve(tr, tr), np.zeros(len(tr)))
    shifted = tr.tensors["latent"] + 0.5  # RMSE of a constant 0.5 offset is exactly 0.5
    np.testing.assert_allclose(error_curve(tr, shifted), 0.5, rtol=1e-6)
    other = _trace("b", seed=1)
    assert (error_curve(tr, other) > 0).all()


def test_error_curve_averages_per_image_rmse_over_the_batch() -> None:
    tr = _trace("a", shape=(2, 1, 4, 4))
    ref = tr.tensors["latent"].copy()
    ref[:, 0] += 1.0  # image 0 off by 1, image 1 exact -> mean of per-image RMSE = 0.5
    np.testing.assert_allclose(error_curve(tr, ref), 0.5, rtol=1e-6)


def test_reference_trace_is_aligned_by_noise_level_not_by_step() -> None:
    # A sampling trace walks the levels downwards; an inversion that lands exactly on the
    # sampling latents (in reverse order) has zero error at every level.
    sampling = _trace("sampling", descending=True)
    lat, prev = sampling.tensors["latent"], sampling.tensors["latent_prev"]
    S = len(sampling)
    inv_latents = np.concatenate([lat[-2::-1], prev[:1]])  # latents at levels grid[1..S]
    inversion = Trace("inversion", step=np.arange(S), t_from=sampling.t_to[::-1].copy(),
                      t_to=sampling.t_from[::-1].copy(), nfe=np.arange(1, S + 1) * 2.0,
                      tensors={"latent": inv_latents})
    np.testing.assert_allclose(error_curve(inversion, sampling), 0.0, atol=1e-7)
    # Without latent_prev the reference lacks the top level: that step is NaN, not a silent 0.
    no_prev = Trace("s", sampling.step, sampling.t_from, sampling.t_to, sampling.nfe, {"latent": lat})
    curve = error_curve(inversion, no_prev)
    assert np.isnan(curve[-1]) and np.allclose(curve[:-1], 0.0, atol=1e-7)


def test_larger_reference_is_pooled_to_the_trace_size() -> None:
    tr = _trace("a", shape=(1, 1, 4, 4))
    big = np.repeat(np.repeat(tr.tensors["latent"], 2, axis=-1), 2, axis=-2)  # (S, 1, 1, 8, 8)
    assert align_reference(tr, big).shape == tr.tensors["latent"].shape
    np.testing.assert_allclose(error_curve(tr, big), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        error_curve(tr, big[:-1])


# --------------------------------------------------------------------------- error_curves
def test_error_curves_with_one_reference_measure_every_trace_against_it() -> None:
    a, b, ref = _trace("a"), _trace("b", seed=1, residual=True), _trace("ref", seed=2)
    errors = error_curves([a, b], ref)
    assert isinstance(errors, ErrorCurves) and errors.measure == "RMSE" and errors.key == "latent"
    assert errors.label == "RMSE vs reference (latent units)"
    assert errors.has_reference and errors.has_curve
    for tr, curve, aligned in zip((a, b), errors.curves, errors.references):
        np.testing.assert_array_equal(curve, error_curve(tr, ref))  # RMSE wins over b's own residual
        np.testing.assert_array_equal(aligned, align_reference(tr, ref))
    assert not np.allclose(errors.curves[0], errors.curves[1])  # each trace against the reference


def test_error_curves_take_one_reference_per_trace_from_a_list() -> None:
    a, b = _trace("a"), _trace("b", seed=1)
    errors = error_curves([a, b], [None, a])
    assert errors.curves[0] is None and errors.references[0] is None
    np.testing.assert_array_equal(errors.curves[1], error_curve(b, a))
    single = error_curves(a, a)  # one Trace alone is a list of one
    assert len(single.curves) == 1 and np.array_equal(single.curves[0], np.zeros(len(a)))
    with pytest.raises(ValueError, match="1 references for 2 traces"):
        error_curves([a, b], [a])


def test_error_curves_without_reference_fall_back_to_solver_residuals() -> None:
    with_res, plain = _trace("c", residual=True), _trace("a")
    errors = error_curves([with_res, plain])
    assert errors.measure == "residual" and errors.label == "solver residual (latent units)"
    assert not errors.has_reference and errors.references == (None, None)
    np.testing.assert_allclose(errors.curves[0], [0.1 / (i + 1) for i in range(len(with_res))], rtol=1e-6)
    np.testing.assert_array_equal(errors.curves[0], solver_residual(with_res))
    assert errors.curves[1] is None
    assert not error_curves(plain).has_curve


def test_error_curves_refuse_what_is_not_a_trace_and_name_a_missing_tensor() -> None:
    for bad in (None, "trace", [], [np.zeros(3)]):
        with pytest.raises(ValueError, match="traces must be"):
            error_curves(bad)
    with pytest.raises(ValueError, match="has no 'noise_pred' tensors"):
        error_curves(_trace("a"), _trace("b"), key="noise_pred")
