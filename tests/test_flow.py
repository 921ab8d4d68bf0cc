"""Rectified-flow maths and solvers (cfginv_lite.flow, cfginv_lite.flow_fixed_point) on the converted digits-split model."""
from __future__ import annotations

import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.data import digit_prompt, split_digit_set
from cfginv_lite.ddim import invert_naive, sample_ddim
from cfginv_lite.guidance import make_guidance
from cfginv_lite.flow import (EpsilonAsFlow, ddim_to_flow, flow_grid, flow_to_ddim, invert_euler, invert_midpoint,
                              invert_rf_solver, sample_euler)
from cfginv_lite.flow_fixed_point import FLOW_METHODS, invert_flow_fixed_point, invert_uni_inv, run_flow_method


@pytest.fixture(scope="module")
def setup():
    model = cl.load_model("digits-split")
    images, labels = split_digit_set("heldout", 1)      # 10 held-out digits
    return model, EpsilonAsFlow(model), images, [digit_prompt(d) for d in labels]


def ts_of(steps: int) -> list[float]:
    """Flow times of the DDIM grid (the converted model is defined on its schedule's range only)."""
    return EpsilonAsFlow(cl.load_model("digits-split")).flow_times(cl.timestep_grid(steps))


class CountingFlow:
    """Counts the rows (image-branches) the wrapped model's network sees: the true NFE."""

    def __init__(self, inner) -> None:
        self.inner, self.rows = inner, 0

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def predict_velocity(self, z, t, emb):
        self.rows += z.shape[0]
        return self.inner.predict_velocity(z, t, emb)


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_ddim_inversion_is_reversed_euler_in_flow_coordinates(setup, scale: float) -> None:
    model, flow, images, prompts = setup
    grid = cl.timestep_grid(10)
    abar = model.alphas_cumprod
    g = make_guidance(model, prompts, scale)
    x = images.double()
    z_ddim = invert_naive(model, x, grid, g, progress=False)
    z_flow = invert_euler(flow, ddim_to_flow(x, float(abar[0])), flow.flow_times(grid), g, progress=False)
    assert torch.allclose(ddim_to_flow(z_ddim, float(abar[grid[-1]])), z_flow, rtol=0, atol=1e-10)
    # and sampling: DDIM down the grid == Euler down the flow grid
    back_ddim = sample_ddim(model, z_ddim, grid, g, progress=False)
    back_flow = sample_euler(flow, z_flow, flow.flow_times(grid), g, progress=False)
    assert torch.allclose(ddim_to_flow(back_ddim, float(abar[0])), back_flow, rtol=0, atol=1e-10)
    # a wrong conversion (no 1/(a+b) scaling) is far off: the check can fail
    assert (z_ddim - z_flow).abs().max() > 1e-3


def test_flow_coordinates_round_trip() -> None:
    z = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    for abar in (0.999, 0.5, 0.0047):
        s = (1 - abar) ** 0.5 / ((1 - abar) ** 0.5 + abar ** 0.5)
        assert torch.allclose(flow_to_ddim(ddim_to_flow(z, abar), s), z, atol=1e-12)


def test_rf_solver_is_the_midpoint_rule(setup) -> None:
    model, flow, images, prompts = setup
    g = make_guidance(model, prompts, 7.5)
    z0, ts = images.double(), ts_of(6)
    a = invert_rf_solver(flow, z0, ts, g, progress=False)
    b = invert_midpoint(flow, z0, ts, g, progress=False)
    assert torch.allclose(a, b, rtol=0, atol=1e-10)
    assert (a - invert_euler(flow, z0, ts, g, progress=False)).abs().max() > 1e-3   # and not Euler


def test_uni_inv_is_one_warm_started_fixed_point_iteration(setup) -> None:
    model, flow, images, prompts = setup
    g = make_guidance(model, prompts, 7.5)
    z0, ts = images.double(), ts_of(6)
    a = invert_uni_inv(flow, z0, ts, g, progress=False)
    one = dict(budget=1, warm="reuse", progress=False)
    assert torch.equal(a, invert_flow_fixed_point(flow, z0, ts, g, average_last=1, **one))   # returns G(x_0) itself
    # the default returns x_1 = x_0 + 1 * (G(x_0) - x_0): the same number up to float64 round-off
    assert torch.allclose(a, invert_flow_fixed_point(flow, z0, ts, g, **one), rtol=0, atol=1e-12)
    assert (a - invert_flow_fixed_point(flow, z0, ts, g, budget=1, progress=False)).abs().max() > 1e-4   # warm="euler"


def test_every_method_reports_its_true_nfe(setup) -> None:
    model, flow, images, prompts = setup
    g = make_guidance(model, prompts[:2], 3.0)
    n = 4
    expected = {"euler": 2 * n, "midpoint": 4 * n, "rf-solver": 4 * n, "fireflow": 2 * (n + 1), "uni-inv": 2 * (n + 1),
                "fixed-point-4": 2 * n * 5, "anderson-3": 2 * n * 5}
    assert set(expected) == set(FLOW_METHODS)
    for name, nfe in expected.items():
        counting = CountingFlow(flow)
        result = run_flow_method(name, counting, images[:2], ts_of(n), g)
        assert result.nfe == nfe == counting.rows // 2, name


def test_reversed_euler_round_trip_is_exact_as_steps_grow_at_guidance_1(setup) -> None:
    model, flow, images, prompts = setup
    g = make_guidance(model, prompts, 1.0)
    errors = {}
    for n in (4, 8, 16, 32):
        ts = ts_of(n)
        errors[n] = (sample_euler(flow, invert_euler(flow, images, ts, g, progress=False), ts, g, progress=False)
                     - images).pow(2).mean().sqrt().item()
    assert errors[4] > errors[8] > errors[16] > errors[32]
    assert errors[32] < errors[4] / 2.5        # measured 3.6x on this model (an 8x finer grid)
    # the fixed point inverts Euler *sampling* on the same grid far better than reversed Euler does
    ts = ts_of(4)
    z = invert_flow_fixed_point(flow, images, ts, g, budget=8, progress=False)
    fp = (sample_euler(flow, z, ts, g, progress=False) - images).pow(2).mean().sqrt().item()
    assert fp < errors[4] / 10


def test_anderson_lowers_the_fixed_point_residual_at_high_guidance(setup) -> None:
    model, flow, images, prompts = setup
    g = make_guidance(model, prompts, 7.5)
    res = {}
    for window in (0, 3):
        seen = []
        invert_flow_fixed_point(flow, images, ts_of(4), g, budget=4, window=window, progress=False,
                                callback=lambda info: seen.append(info["residuals"][-1].nanmedian().item()))
        res[window] = max(seen)
    assert res[3] < res[0]


def test_flow_fixed_point_stops_per_image_like_the_ddim_family(setup) -> None:
    """The course's per-image search: ``tol`` stops an image at its first evaluation below it, which then
    returns its evaluated iterate, counts only what it ran and records the stop (THRESHOLD)."""
    from cfginv_lite.records import Stop

    model, flow, images, prompts = setup
    g = make_guidance(model, prompts, 7.5)
    seen = []
    invert_flow_fixed_point(flow, images, ts_of(3), g, budget=[4, 4, 4], tol=1e9, progress=False,
                            callback=seen.append)
    assert all(bool((info["iterations"] == 1).all()) and bool((info["stopped"] == Stop.THRESHOLD).all())
               and torch.isfinite(info["residual"]).all() for info in seen)
    assert seen[-1]["nfe"].tolist() == [2 * 3 * (1 + 1)] * len(images)      # Euler predictor + one iteration


def test_bad_input_is_refused_clearly(setup) -> None:
    model, flow, images, prompts = setup
    g = make_guidance(model, prompts, 3.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        invert_euler(flow, images, [0.0, 0.5, 0.5, 1.0], g, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        invert_euler(flow, images, [0.0, 0.5, 1.5], g, progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        invert_euler(flow, images, [0.0], g, progress=False)
    with pytest.raises(TypeError, match="predict_velocity"):
        invert_euler(model, images, ts_of(2), g, progress=False)          # an epsilon model, not wrapped
    with pytest.raises(ValueError, match="Guidance"):
        invert_euler(flow, images, ts_of(2), 3.0, progress=False)
    with pytest.raises(ValueError, match="shape"):
        invert_euler(flow, images[:, :, :4], ts_of(2), g, progress=False)
    with pytest.raises(ValueError, match="outside the epsilon model's schedule"):
        invert_euler(flow, images, flow_grid(2), g, progress=False)      # t = 0 and 1 lie beyond SD's schedule
    with pytest.raises(ValueError, match="flow method"):
        run_flow_method("heun", flow, images, ts_of(2), g)
    with pytest.raises(ValueError, match="window"):
        invert_flow_fixed_point(flow, images, ts_of(2), g, window=-1, progress=False)
    with pytest.raises(ValueError, match="budget has 3 entries for a grid of 2 steps"):
        invert_flow_fixed_point(flow, images, ts_of(2), g, budget=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="divergence_factor"):
        invert_flow_fixed_point(flow, images, ts_of(2), g, divergence_factor=1.0, progress=False)
    with pytest.raises(ValueError, match="steps"):
        flow_grid(0)


class MetaFlow:
    """A velocity model on the ``meta`` device: any host read of a tensor value inside a loop raises."""

    name, latent_shape, dtype = "meta-flow", (1, 8, 8), torch.float32
    device = torch.device("meta")

    def predict_velocity(self, z, t, emb):
        assert t.device.type == "meta"          # times are built on the latents' device
        return z * 0.1 + t.view(-1, 1, 1, 1).to(z.dtype) * 1e-3 + emb.mean() * 0


@pytest.mark.parametrize("name", sorted(FLOW_METHODS))
def test_flow_solvers_never_read_a_value_on_the_host(name: str, monkeypatch) -> None:
    from cfginv_lite import flow as flow_module, flow_fixed_point, validation
    from cfginv_lite.guidance import Guidance

    for module in (flow_module, flow_fixed_point):
        monkeypatch.setattr(module, "check_latents", lambda model, latents: latents)
    monkeypatch.setattr(validation.FiniteGuard, "raise_if_bad", lambda self, *args: None)
    emb = torch.zeros(2, 8, 32, device="meta")
    g = Guidance(cond=emb, uncond=emb, scale=7.5)
    z = torch.zeros(2, 1, 8, 8, device="meta")
    entry, rows = FLOW_METHODS[name], []
    out = entry.invert(MetaFlow(), z, flow_grid(3), g, callback=rows.append, progress=False, **dict(entry.options))
    assert out.device.type == "meta" and len(rows) == 3   # the NFE is read on the host only after the run
    assert all(v.device.type == "meta" for r in rows for v in r.values() if isinstance(v, torch.Tensor))
    back = entry.sample(MetaFlow(), out, flow_grid(3), g, callback=rows.append, progress=False)   # its regenerator too
    assert back.device.type == "meta" and len(rows) == 6


def test_flow_edit_with_equal_prompts_returns_the_source_and_counts_its_nfe(setup) -> None:
    from cfginv_lite.flow_edit import flow_edit

    model, flow, images, prompts = setup
    g = make_guidance(model, prompts, 3.0)
    ts = ts_of(5)
    seen = []
    out = flow_edit(flow, images, ts, g, g, skip=1, progress=False, callback=lambda info: seen.append(info["nfe"]))
    # z_tar = z + z_src - x_src equals z_src up to float32 rounding, so the velocity difference is ~0 at every
    # step (measured 5e-7 in all); a wrong coupling (z_tar = z) moves the image by O(0.1)
    assert (out - images).abs().max() < 1e-4
    assert (seen[-1] == 2 * 2 * (5 - 1)).all() and len(seen) == 4
    target = make_guidance(model, [digit_prompt((k + 1) % 10) for k in range(10)], 3.0)
    a = flow_edit(flow, images, ts, g, target, seed=0, progress=False)
    assert torch.equal(a, flow_edit(flow, images, ts, g, target, seed=0, progress=False))   # seeded
    assert not torch.equal(a, flow_edit(flow, images, ts, g, target, seed=1, progress=False))
    assert (a - images).abs().max() > 0.1                 # a different prompt moves the image
    with pytest.raises(ValueError, match="skip"):
        flow_edit(flow, images, ts, g, target, skip=5, progress=False)
    with pytest.raises(ValueError, match="n_avg"):
        flow_edit(flow, images, ts, g, target, n_avg=0, progress=False)
