"""Compensation solvers on an analytic model whose per-step inverse is known exactly.

``MatrixModel.predict_noise`` is affine in ``z`` (``eps = A_branch(t) z + c_branch``), so
the implicit equation ``move(z1, eps_w(z1; t1), t1 -> t) = z`` is a linear system that
``torch.linalg.solve`` answers exactly, and the fixed-point map's contraction factor is
under the test's control.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cfginv_lite.compensate import invert_original, REFERENCE_NUMEL, scaled_threshold
from cfginv_lite.fixed_point import budget_after_fraction, budget_on_levels, invert_fixed_point


def invert_anderson(*args, iterations=5, window=3, **kw):
    """The family's Anderson member (window 3), as the registry's \"anderson\" entry runs it."""
    return invert_fixed_point(*args, budget=iterations, window=window, **kw)
from cfginv_lite.records import Stop
from cfginv_lite.ddim import invert_naive, move, sample_ddim
from cfginv_lite.guidance import Guidance
from cfginv_lite.metrics import is_collapsed
from cfginv_lite.schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config, timestep_grid

ABAR = alphas_cumprod_from_config(SD1_SCHEDULER_CONFIG)
HYPO = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _spectral(n: int, eigenvalues: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q @ torch.diag(eigenvalues.to(torch.float64)) @ q.T


class MatrixModel:
    """``eps(z, t, branch) = (S_b + t/1000 * T_b) z + c_b``; branch from the embedding (0 / 1)."""

    name = "matrix"

    def __init__(self, eig_max: float = 0.5, t_slope: float = 0.1, cond_gap: float = 0.05,
                 shape: tuple[int, int, int] = (1, 4, 4), seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        n = math.prod(shape)
        self.latent_shape = shape
        self.scheduler_config = dict(SD1_SCHEDULER_CONFIG)
        self.alphas_cumprod = ABAR
        self.device, self.dtype = torch.device("cpu"), torch.float64
        base = _spectral(n, torch.linspace(-eig_max, eig_max, n), gen)
        gap = _spectral(n, torch.linspace(-cond_gap, cond_gap, n), gen)
        self.S = torch.stack([base, base + gap])
        self.T = t_slope * torch.stack([_spectral(n, torch.linspace(-1, 1, n), gen) for _ in range(2)])
        self.c = 0.1 * torch.randn(2, n, generator=gen, dtype=torch.float64)
        self.calls: list[int] = []

    def guidance(self, scale: float, batch: int = 1) -> Guidance:
        return Guidance(cond=torch.ones(batch, 1, 1, dtype=torch.float64),
                        uncond=torch.zeros(batch, 1, 1, dtype=torch.float64), scale=scale)

    def predict_noise(self, latents: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        self.calls.append(latents.shape[0])
        branch = embeddings[:, 0, 0].round().long()
        t = labels.to(torch.float64).view(-1, 1, 1) / 1000.0
        a = self.S[branch] + t * self.T[branch]
        eps = torch.einsum("bij,bj->bi", a, latents.flatten(1)) + self.c[branch]
        return eps.view_as(latents)

    # exact quantities -------------------------------------------------------------
    def guided_matrix(self, label: float, w: float) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.S + label / 1000.0 * self.T
        return a[0] + w * (a[1] - a[0]), self.c[0] + w * (self.c[1] - self.c[0])

    def exact_step(self, z: torch.Tensor, t: int, t1: int, w: float) -> torch.Tensor:
        """Solve ``move(z1, eps_w(z1; t1, t1), t1 -> t) = z`` exactly."""
        a_t, a_t1 = math.sqrt(ABAR[t]), math.sqrt(ABAR[t1])
        b_t, b_t1 = math.sqrt(1 - ABAR[t]), math.sqrt(1 - ABAR[t1])
        p, q = a_t / a_t1, b_t - a_t * b_t1 / a_t1
        m, c = self.guided_matrix(t1, w)
        lhs = p * torch.eye(m.shape[0], dtype=torch.float64) + q * m
        rhs = z.flatten(1) - q * c
        return torch.linalg.solve(lhs, rhs.T).T.view_as(z)

    def contraction(self, grid: list[int], w: float) -> float:
        """Max over steps of the spectral norm of the fixed-point map's Jacobian ``k' M``."""
        worst = 0.0
        for t, t1 in zip(grid, grid[1:]):
            a_t, a_t1 = math.sqrt(ABAR[t]), math.sqrt(ABAR[t1])
            k = math.sqrt(1 - ABAR[t1]) - a_t1 * math.sqrt(1 - ABAR[t]) / a_t
            worst = max(worst, float(torch.linalg.matrix_norm(k * self.guided_matrix(t1, w)[0], ord=2)))
        return worst


def _latents(batch: int, seed: int, shape: tuple[int, int, int] = (1, 4, 4)) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _exact_chain(model: MatrixModel, x: torch.Tensor, grid: list[int], w: float) -> torch.Tensor:
    z = x
    for t, t1 in zip(grid, grid[1:]):
        z = model.exact_step(z, t, t1, w)
    return z


# --------------------------------------------------------------------------- convergence
@HYPO
@given(seed=st.integers(0, 10_000), w=st.floats(1.0, 6.0), steps=st.integers(2, 6),
       solver=st.sampled_from(["fixed-point", "damped", "anderson"]))
def test_fixed_point_solvers_reach_the_exact_inverse_when_the_map_contracts(seed, w, steps, solver):
    model = MatrixModel(eig_max=0.3, t_slope=0.05, cond_gap=0.03, seed=seed)
    grid = timestep_grid(steps)
    assume(model.contraction(grid, w) < 0.9)  # the premise being tested (measured: always ~< 0.62)
    x = _latents(2, seed)
    g = model.guidance(w)
    if solver == "anderson":
        z = invert_anderson(model, x, grid, g, iterations=60, tol=1e-13, progress=False)
    else:
        z = invert_fixed_point(model, x, grid, g, budget=300, tol=1e-13, progress=False,
                               damping=1.0 if solver == "fixed-point" else 0.6)
    exact = _exact_chain(model, x, grid, w)
    assert torch.allclose(z, exact, atol=1e-9, rtol=0), float((z - exact).abs().max())
    # DDIM sampling is the exact inverse of the exactly solved steps: the round trip closes.
    back = sample_ddim(model, z, grid, g, progress=False)
    assert torch.allclose(back, x, atol=1e-8, rtol=0)


def test_naive_inversion_is_not_exact_on_the_same_problem():
    """Guards the test above: the analytic problem is one naive inversion gets wrong."""
    model = MatrixModel(eig_max=0.3, seed=1)
    grid, x, g = timestep_grid(4), _latents(2, 1), model.guidance(4.0)
    naive = invert_naive(model, x, grid, g, label="destination", progress=False)
    assert (naive - _exact_chain(model, x, grid, 4.0)).abs().max() > 1e-3


def _iterations_to_tol(solver, model, x, grid, g, **kw) -> list[int]:
    rows: list[dict] = []
    solver(model, x, grid, g, callback=rows.append, progress=False, tol=1e-10, **kw)
    assert all((r["stopped"] == Stop.THRESHOLD).all() for r in rows), [r["stopped"] for r in rows]
    return [int(r["iterations"]) for r in rows]


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_anderson_needs_fewer_iterations_than_plain_iteration(seed):
    # Eigenvalues of the map's Jacobian up to ~0.8 in modulus, both signs: plain iteration is slow.
    model = MatrixModel(eig_max=0.95, t_slope=0.0, cond_gap=0.0, seed=seed)
    grid, x, g = timestep_grid(2), _latents(1, seed), model.guidance(1.0)
    assert 0.6 < model.contraction(grid, 1.0) < 0.9
    plain = _iterations_to_tol(invert_fixed_point, model, x, grid, g, budget=400)
    anderson = _iterations_to_tol(invert_anderson, model, x, grid, g, iterations=400)
    assert all(a < p for a, p in zip(anderson, plain)), (anderson, plain)
    assert sum(anderson) < 0.7 * sum(plain)  # measured: ~0.5 for window 3


def test_damping_one_is_plain_fixed_point_in_the_inverse_form():
    """``x <- G(x)`` with ``G(x) = move(z, eps_w(x; t1), t -> t1)`` (Meiri et al.)."""
    model = MatrixModel(seed=3)
    grid, x, g = [0, 500], _latents(1, 3), model.guidance(3.0)
    rows: list[dict] = []
    z = invert_fixed_point(model, x, grid, g, budget=3, callback=rows.append, progress=False,
                           divergence_factor=None)
    a0, a1 = float(ABAR[0]), float(ABAR[500])

    def G(v):  # noqa: N802 - the map's name in the docstring
        m, c = model.guided_matrix(500, 3.0)
        return move(x, (v.flatten(1) @ m.T + c).view_as(v), a0, a1)

    expected = G(G(G(G(x))))  # x_0 = G(z) (naive destination step), then 3 evaluations
    assert int(rows[0]["iterations"]) == 3 and rows[0]["residual"].isnan().all()  # x_3: never evaluated
    assert torch.allclose(z, expected, atol=1e-12)


def test_average_last_averages_the_last_map_values():
    model = MatrixModel(seed=4)
    grid, x, g = [0, 500], _latents(1, 4), model.guidance(3.0)
    m, c = model.guided_matrix(500, 3.0)
    G = lambda v: move(x, (v.flatten(1) @ m.T + c).view_as(v), float(ABAR[0]), float(ABAR[500]))  # noqa: E731
    x0 = G(x)
    x1 = G(x0)
    x2 = G(x1)
    x3 = G(x2)
    z = invert_fixed_point(model, x, grid, g, budget=3, average_last=2, progress=False)
    assert torch.allclose(z, (x2 + x3) / 2, atol=1e-12)
    assert not torch.allclose(z, x3, atol=1e-6)


# --------------------------------------------------------------------------- the faithful port
def _oracle(errors: list[float], n: int, strength: float, thr: float, tol: float, mode: str) -> dict:
    """The reference's control flow, restated with Python floats (step 4 of the algorithm)."""
    min_err, lr, best, lrs = 1e10, strength, None, []
    for k in range(n):
        err, prev = errors[k], min_err
        if err < min_err:
            best, min_err = k, err
        if min_err < thr:
            return dict(iterations=k + 1, best=best, lrs=lrs, stopped="threshold")
        if (min_err if mode == "faithful" else prev) - err < tol:
            lr *= 0.9
        lrs.append(lr)
    return dict(iterations=n, best=best, lrs=lrs, stopped="max_iter" if n else "skipped")


class ScriptedModel:
    """A model that makes the seed's error ``sum|z - back(zr)|`` at iteration ``k`` equal
    ``errors[b][k]`` for image ``b``, on the grid ``[0, 500, 999]`` with ``refine_skip=0``
    (step 1 alone is refined) at guidance 1 (``eps_w = eps_c``).

    The noise it returns moves ``back = move(zr, e, t1 -> t)`` to ``z - err / numel``
    uniformly, where ``z`` is step 1's source (the naive step from the zero latent), so the
    seed's update ``zr += (z - back) * lr`` adds exactly ``err / numel * lr`` to each entry.
    """

    name, latent_shape, device, dtype = "scripted", (1, 2, 2), torch.device("cpu"), torch.float64
    alphas_cumprod = ABAR
    grid = [0, 500, 999]

    def __init__(self, errors: list[list[float]]) -> None:
        self.errors, self.calls, self.seen = errors, 0, []
        self.z = None

    def predict_noise(self, latents, labels, embeddings):
        self.calls += 1
        if self.calls <= 2:  # the two naive steps: zero noise
            if self.calls == 2:
                self.z = latents[: latents.shape[0] // 2].clone()
            return torch.zeros_like(latents)
        k, x = self.calls - 3, latents[: latents.shape[0] // 2]
        self.seen.append(x.clone())
        a_t, a_t1 = math.sqrt(ABAR[500]), math.sqrt(ABAR[999])
        coef = math.sqrt(1 - ABAR[500]) - a_t * math.sqrt(1 - ABAR[999]) / a_t1
        err = torch.tensor([row[k] for row in self.errors], dtype=torch.float64).view(-1, 1, 1, 1)
        e = (self.z - err / 4 - x * (a_t / a_t1)) / coef  # back = z - err / numel, numel = 4
        return torch.cat([e, e])


def _scripted_run(errors, n, mode, thr=3.0, tol=1.0, strength=0.9):
    model = ScriptedModel(errors)
    g = Guidance(cond=torch.ones(1, 1, 1, dtype=torch.float64), uncond=torch.zeros(1, 1, 1, dtype=torch.float64),
                 scale=1.0)
    rows: list[dict] = []
    z = invert_original(model, torch.zeros(len(errors), 1, 2, 2, dtype=torch.float64), model.grid, g,
                        refine_skip=0.0, refine_iterations=n, refine_strength=strength, lr_decay_mode=mode,
                        error_threshold=thr * REFERENCE_NUMEL / 4, decay_tolerance=tol * REFERENCE_NUMEL / 4,
                        callback=rows.append, progress=False)
    return z, rows[1], model


# The scripted errors come back through float arithmetic (rounded at the last bit), so exact
# ties - two equal errors, an error equal to the threshold 3, or a difference equal to the
# decay tolerance 1 - may break either way and the oracle cannot say which. Errors on a grid
# of step 0.03 offset by 0.01 are distinct and never tie with 3 or differ by exactly 1.
_tie_free_errors = st.lists(st.integers(0, 666), min_size=6, max_size=6, unique=True).map(
    lambda xs: [0.03 * x + 0.01 for x in xs])


@settings(max_examples=40, deadline=None)
@given(errors=st.lists(_tie_free_errors, min_size=2, max_size=2),
       n=st.integers(0, 6), mode=st.sampled_from(["faithful", "intended"]))
def test_original_control_flow_matches_the_reference(errors, n, mode):
    z, row, model = _scripted_run(errors, n, mode)
    for b in range(2):
        ref = _oracle(errors[b], n, 0.9, 3.0, 1.0, mode)
        assert int(row["iterations"][b]) == (ref["iterations"] if n else 0)
        assert Stop(int(row["stopped"][b])).name.lower() == ref["stopped"]
        # The returned latent is the iterate that was evaluated at the best iteration ...
        evaluated = [x[b] for x in model.seen][: ref["iterations"] if n else 0]
        assert torch.equal(z[b], evaluated[ref["best"]] if n else torch.zeros_like(z[b]))  # naive step: 0
        # ... and each iterate is the previous one plus (z - back) * lr, with the oracle's lr.
        for k in range(1, len(evaluated)):
            step = errors[b][k - 1] / 4 * ref["lrs"][k - 1]
            assert torch.allclose(evaluated[k], evaluated[k - 1] + step)
        # An image that stopped no longer changes while the others go on.
        for x in model.seen[len(evaluated):]:
            assert torch.equal(x[b], evaluated[-1] if evaluated else x[b])


def test_faithful_lr_decays_every_iteration_intended_only_without_progress():
    errors = [[10.0, 5.0, 4.5, 4.4, 4.3]]

    def run(mode: str) -> list[float]:
        _, _, model = _scripted_run(errors, 5, mode, thr=0.0, tol=1.0)
        steps = [float((b - a).mean()) for a, b in zip(model.seen, model.seen[1:])]
        return [s / (e / 4) for s, e in zip(steps, errors[0])]  # step = err / numel * lr

    assert run("faithful") == pytest.approx([0.81, 0.729, 0.6561, 0.59049])
    # intended: no decay on the first iteration (previous min 1e10) nor after a 5-unit gain.
    assert run("intended") == pytest.approx([0.9, 0.9, 0.81, 0.729])


def test_original_defaults_refine_exactly_14_of_50_steps_and_count_nfe():
    model = MatrixModel(seed=5)
    grid, x = timestep_grid(50), _latents(1, 5)
    rows: list[dict] = []
    invert_original(model, x, grid, model.guidance(3.0), error_threshold=0.0, callback=rows.append, progress=False)
    refined = [r["step"] for r in rows if (r["stopped"] != Stop.SKIPPED).all()]
    assert refined == list(range(36, 50))
    assert all(int(r["iterations"]) == 3 for r in rows if r["step"] in refined)
    assert int(rows[-1]["nfe"]) == 2 * 50 + 14 * 3 * 2 == 184
    assert len(model.calls) == 50 + 14 * 3  # one batched guided call per iteration
    # tless labels: unconditional t - (t1 - t) / 4, conditional t.
    r = rows[40]
    assert r["label_uncond"] == pytest.approx(r["t_from"] - (r["t_to"] - r["t_from"]) * 0.25)
    assert r["label_cond"] == r["t_from"]
    assert set(rows[40]) == {"step", "steps", "t_from", "t_to", "label_uncond", "label_cond", "latent",
                             "latent_prev", "noise", "residual", "nfe", "iterations", "residuals", "stopped"}
    assert rows[40]["residuals"].shape == (3, 1)
    assert rows[40]["residual"] == rows[40]["residuals"].min(0).values


def test_original_no_tless_uses_the_destination_label_and_zero_iterations_is_naive():
    model = MatrixModel(seed=6)
    grid, x, g = timestep_grid(10), _latents(1, 6), model.guidance(3.0)
    rows: list[dict] = []
    invert_original(model, x, grid, g, tless_factor=None, callback=rows.append, progress=False)
    assert all(r["label_uncond"] == r["label_cond"] == r["t_to"] for r in rows if (r["stopped"] != Stop.SKIPPED).all())
    z0 = invert_original(model, x, grid, g, refine_iterations=0, progress=False)
    assert torch.equal(z0, invert_naive(model, x, grid, g, label="source", progress=False))


def test_integer_labels_round_tless_half_up_and_change_nothing_else():
    model = MatrixModel(seed=6)
    grid, x, g = timestep_grid(20), _latents(2, 6), model.guidance(3.0)
    frac: list[dict] = []
    whole: list[dict] = []
    invert_original(model, x, grid, g, callback=frac.append, progress=False)
    invert_original(model, x, grid, g, integer_labels=True, callback=whole.append, progress=False)
    refined = [i for i, r in enumerate(frac) if (r["stopped"] != Stop.SKIPPED).all()]
    assert refined == list(range(15, 20))
    for i in refined:
        tless = frac[i]["label_uncond"]
        assert tless != int(tless), "at 20 steps the original's tless is fractional (t - 12.25 or t - 12.5)"
        assert whole[i]["label_uncond"] == math.floor(tless + 0.5)
        assert whole[i]["label_cond"] == frac[i]["label_cond"] == frac[i]["t_from"]
    for i in range(15):  # unrefined steps are the same naive steps
        assert torch.equal(whole[i]["latent"], frac[i]["latent"])
    z_none = invert_original(model, x, grid, g, tless_factor=None, progress=False)
    assert torch.equal(z_none, invert_original(model, x, grid, g, tless_factor=None, integer_labels=True,
                                               progress=False)), "destination labels are whole already"


def test_fixed_point_skip_rule():
    model = MatrixModel(seed=7)
    grid, x, g = timestep_grid(10), _latents(1, 7), model.guidance(2.0)
    for skip, expected in ((0.0, 10), (0.7, 3), (1.0, 0)):
        rows: list[dict] = []
        invert_fixed_point(model, x, grid, g, budget=budget_after_fraction(2, skip), callback=rows.append,
                           progress=False)
        assert sum(bool((r["stopped"] != Stop.SKIPPED).all()) for r in rows) == expected


def test_threshold_is_scaled_by_latent_size():
    assert scaled_threshold(5.0, REFERENCE_NUMEL) == 5.0
    assert scaled_threshold(5.0, 64) == pytest.approx(5.0 / 256)
    model = MatrixModel(seed=8)  # 16 elements per image
    # refine_skip=0 refines every step but the first (the original's rule is strictly i > 0).
    grid, x, g = [0, 250, 500], _latents(1, 8), model.guidance(3.0)
    rows: list[dict] = []
    invert_original(model, x, grid, g, refine_skip=0.0, error_threshold=0.0, callback=rows.append, progress=False)
    assert [int(r["stopped"]) for r in rows] == [Stop.SKIPPED, Stop.MAX_ITER]
    first_sum = float(rows[1]["residuals"][0, 0]) * 16  # sum(|z - back|) of the naive iterate
    for factor, stop_first in ((1.01, True), (0.99, False)):
        rows = []
        threshold = first_sum * REFERENCE_NUMEL / 16 * factor  # in the reference (4x64x64) units
        invert_original(model, x, grid, g, refine_skip=0.0, error_threshold=threshold, callback=rows.append,
                        progress=False)
        assert (int(rows[1]["iterations"]) == 1 and int(rows[1]["stopped"]) == Stop.THRESHOLD) == stop_first


# --------------------------------------------------------------------------- divergence, batches
@pytest.mark.parametrize("solver", ["fixed-point", "anderson", "original"])
def test_divergence_is_detected_and_the_best_iterate_kept(solver):
    model = MatrixModel(eig_max=4.0, seed=9)  # |k' M| > 1: the fixed-point map expands
    grid, x, g = [0, 250, 500], _latents(1, 9), model.guidance(1.0)
    assert model.contraction(grid, 1.0) > 2
    rows: list[dict] = []
    if solver == "original":
        z = invert_original(model, x, grid, g, refine_skip=0.0, refine_iterations=10, divergence_factor=2.0,
                            callback=rows.append, progress=False)
    else:
        z = invert_fixed_point(model, x, grid, g, budget=20, window=0 if solver == "fixed-point" else 3,
                               callback=rows.append, progress=False)
    r = rows[1]
    assert int(r["stopped"]) == Stop.DIVERGED
    assert int(r["iterations"]) < 10
    assert torch.isfinite(z).all()
    residuals = r["residuals"][:, 0]
    assert float(r["residual"]) == pytest.approx(float(residuals.min()))
    assert float(residuals.max()) > 2 * float(r["residual"])


def test_batch_bookkeeping_is_per_image_with_one_call_per_iteration():
    model = MatrixModel(seed=10)
    grid, g, x = [0, 250, 500], model.guidance(3.0), _latents(3, 10)
    kw = dict(refine_skip=0.0, refine_iterations=4, progress=False)  # only step 1 is refined
    rows: list[dict] = []
    invert_original(model, x, grid, g, error_threshold=0.0, callback=rows.append, **kw)
    first = rows[1]["residuals"][0] * 16 * REFERENCE_NUMEL / 16  # naive iterate, reference units
    lo, hi = float(first.min()), float(first.max())
    assert lo < hi
    threshold = math.sqrt(lo * hi)  # between the images: some stop at once, some do not
    rows = []
    model.calls.clear()
    z = invert_original(model, x, grid, g, error_threshold=threshold, callback=rows.append, **kw)
    calls = list(model.calls)
    singles = [invert_original(model, x[b:b + 1], grid, g, error_threshold=threshold, **kw) for b in range(3)]
    assert torch.allclose(z, torch.cat(singles), atol=1e-12)
    stops_at_once = (first < threshold).tolist()
    iters = rows[1]["iterations"]
    assert [int(n) == 1 for n in iters] == stops_at_once and int(iters.max()) > 1
    assert torch.equal(rows[-1]["nfe"], 4 + 2 * iters)  # 2 naive steps + 2 per iteration it used
    assert all(int(r) == Stop.THRESHOLD for r, once in zip(rows[1]["stopped"], stops_at_once) if once)
    assert torch.isnan(rows[1]["residuals"][1:, torch.tensor(stops_at_once)]).all()  # stopped: not evaluated
    # One batched guided call per iteration on the whole batch (2 rows per image: both branches):
    # the shape never changes, and on the CPU the step ends when the last image stops.
    assert calls == [6, 6] + [6] * int(iters.max())
    model.calls.clear()
    invert_fixed_point(model, x, grid, g, budget=3, progress=False)
    assert len(model.calls) == 2 * (1 + 3)  # naive call + one batched call per iteration, per step


def test_is_collapsed_flags_grey_images():
    images = torch.randn(3, 1, 8, 8)
    images[1] = 0.02 * torch.randn(1, 8, 8)
    assert is_collapsed(images, reference_std=1.0).tolist() == [False, True, False]
    assert is_collapsed(images, reference_std=1.0, ratio=1e-3).tolist() == [False, False, False]
    with pytest.raises(ValueError, match="ratio must be a finite real number > 0"):
        is_collapsed(images, 1.0, ratio=0)
    with pytest.raises(ValueError, match="reference_std must be positive"):
        is_collapsed(images, reference_std=-1.0)


def test_bad_budgets_raise_when_built():
    for build, message in ((lambda: budget_on_levels(2, (900, 100)), r"levels must be \(low, high\) with low <= high"),
                           (lambda: budget_on_levels(2, 700), r"levels must be a \(low, high\) pair"),
                           (lambda: budget_on_levels(2, outside=-1), "outside must be an integer >= 0"),
                           (lambda: budget_on_levels(-1), "inside must be an integer >= 0"),
                           (lambda: budget_after_fraction(2, -0.1), r"skip must be a finite real number in \[0, 1\], got -0.1")):
        with pytest.raises(ValueError, match=message):
            build()


def test_budget_on_levels_counts_destination_levels_inclusively():
    grid = [0, 349, 350, 700, 950, 999]
    assert budget_on_levels(4, (350, 950), 1)(grid) == [1, 4, 4, 4, 1]   # destinations 349, 350, ..., 999
    assert budget_after_fraction(3, 0.6)(grid) == [0, 0, 0, 3, 3]   # steps i >= 5 * 0.6


@pytest.mark.parametrize("fn, kwargs, message", [
    (invert_original, dict(refine_iterations=-1), "refine_iterations must be an integer >= 0"),
    (invert_original, dict(refine_iterations=True), "refine_iterations must be an integer >= 0, got True"),
    (invert_original, dict(refine_strength=0.0), "refine_strength must be a finite real number > 0"),
    (invert_original, dict(refine_skip=1.5), r"refine_skip must be a finite real number in \[0, 1\], got 1.5"),
    (invert_original, dict(lr_decay_mode="sometimes"), "lr_decay_mode must be one of 'faithful', 'intended'"),
    (invert_original, dict(divergence_factor=1.0), "divergence_factor must be a finite real number > 1, got 1.0"),
    (invert_original, dict(tless_factor=float("nan")), "tless_factor must be a finite real number, got nan"),
    (invert_original, dict(error_threshold=float("inf")), "error_threshold must be a finite real number >= 0, got inf"),
    (invert_original, dict(lr_decay=np.bool_(True)), "lr_decay must be a finite real number"),
    (invert_original, dict(integer_labels=1), "integer_labels must be True or False, got 1"),
    (invert_original, dict(integer_labels="no"), "integer_labels must be True or False, got 'no'"),
    (invert_fixed_point, dict(budget=-2), "budget must be an integer >= 0"),
    (invert_fixed_point, dict(budget=2.0), "budget must be an iteration count, one per step, or a function of the grid"),
    (invert_fixed_point, dict(budget=[1, 2]), "budget has 2 entries for a grid of 4 steps"),
    (invert_fixed_point, dict(budget=[1, 2, True, 1]), "budget must be an integer >= 0, got True"),
    (invert_fixed_point, dict(budget="3"), "budget must be an iteration count"),
    (invert_fixed_point, dict(warm_start="yes"), "warm_start must be True or False"),
    (invert_fixed_point, dict(window=-1), "window must be an integer >= 0"),
    (invert_fixed_point, dict(damping=0.0), "damping must be a finite real number in "),
    (invert_fixed_point, dict(damping=False), "damping must be a finite real number in .*got False"),
    (invert_fixed_point, dict(budget=2, average_last=3), "average_last=3 exceeds the budget's most iterations per step, 2"),
    (invert_fixed_point, dict(init_label="middle"), "init_label must be one of"),
    (invert_anderson, dict(ridge=-1.0), "ridge must be a finite real number >= 0"),
    (invert_anderson, dict(tol=float("inf")), "tol must be a finite real number >= 0"),
    (invert_anderson, dict(tol=float("nan")), "tol must be a finite real number >= 0"),
])
def test_bad_options_raise(fn, kwargs, message):
    model = MatrixModel(seed=11)
    with pytest.raises(ValueError, match=message):
        fn(model, _latents(1, 11), timestep_grid(4), model.guidance(2.0), progress=False, **kwargs)


@pytest.mark.parametrize("fn, kwargs", [
    (invert_original, dict(refine_iterations=np.int64(2), refine_strength=np.float32(0.9), refine_skip=np.float64(0.0),
                           tless_factor=np.float32(0.25), error_threshold=np.float32(5), lr_decay=np.float32(0.9))),
    (invert_fixed_point, dict(budget=np.int64(2), damping=np.float32(0.5), average_last=np.int32(2),
                              tol=np.float64(1e-9), divergence_factor=np.float32(3))),
    (invert_fixed_point, dict(budget=[np.int64(2)] * 4, window=np.int64(2), ridge=np.float32(1e-8))),
    (invert_anderson, dict(iterations=np.int64(3), window=np.int64(2), ridge=np.float32(1e-8))),
])
def test_numpy_scalars_are_accepted_and_give_the_same_result(fn, kwargs):
    model = MatrixModel(seed=15)
    args = (model, _latents(2, 15), timestep_grid(4), model.guidance(np.float32(2.0)))
    plain = {k: [x.item() for x in v] if isinstance(v, list) else v.item() for k, v in kwargs.items()}
    assert torch.equal(fn(*args, progress=False, **kwargs), fn(*args, progress=False, **plain))


def test_tless_labels_outside_the_schedule_raise():
    model = MatrixModel(seed=16)
    grid, x, g = timestep_grid(10), _latents(1, 16), model.guidance(2.0)
    # Refined steps (i > 10 * 0.7): 799 -> 899 and 899 -> 999; tless = t - 100 * factor.
    invert_original(model, x, grid, g, tless_factor=-1.0, progress=False)  # 999 at step 9: the top
    invert_original(model, x, grid, g, tless_factor=7.99, progress=False)  # 0 at step 8: the bottom
    with pytest.raises(ValueError, match=r"tless_factor=-1.5 gives the label 1049 at step 9 \(899 -> 999\), "
                                         r"outside the schedule's levels \[0, 999\]"):
        invert_original(model, x, grid, g, tless_factor=-1.5, progress=False)
    with pytest.raises(ValueError, match=r"tless_factor=9.0 gives the label -101 at step 8"):
        invert_original(model, x, grid, g, tless_factor=9.0, progress=False)
    invert_original(model, x, grid, g, tless_factor=9.0, refine_iterations=0, progress=False)  # nothing refined


def test_bad_latents_raise():
    model = MatrixModel(seed=12)
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 1, 4, 4\)"):
        invert_fixed_point(model, torch.zeros(1, 1, 3, 3, dtype=torch.float64), timestep_grid(4), model.guidance(2.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        invert_original(model, _latents(1, 12), [0, 0, 10], model.guidance(2.0))


def test_a_slowly_worsening_run_returns_its_best_iterate():
    """Growth below the divergence factor: every iteration runs, and the best (naive) iterate wins."""
    model = MatrixModel(eig_max=1.6, t_slope=0.0, cond_gap=0.0, seed=14)
    grid, x, g = [0, 500], _latents(1, 14), model.guidance(1.0)
    rows: list[dict] = []
    z = invert_fixed_point(model, x, grid, g, budget=3, divergence_factor=1e6, callback=rows.append,
                           progress=False)
    r = rows[0]["residuals"][:, 0]
    assert bool((r[1:] > r[:-1]).all()), r  # the premise: the residual grows every iteration
    assert int(rows[0]["stopped"]) == Stop.MAX_ITER
    assert torch.equal(z, invert_naive(model, x, grid, g, label="destination", progress=False))
    assert float(rows[0]["residual"]) == float(r[0])


def test_registry_entries_and_their_cost():
    from cfginv_lite.methods import METHODS, run_method

    names = ["original", "original-showcase", "original-no-tless", "fixed-point", "fixed-point-damped",
             "anderson", "negative-prompt", "null-text"]
    assert set(names) <= set(METHODS)
    model = MatrixModel(seed=13)
    grid, x, g = timestep_grid(10), _latents(2, 13), model.guidance(3.0)
    # 10 steps: naive 2 per step; the original refines i > 7 (2 steps); fixed point all steps.
    expected = {"original": 20 + 2 * 3 * 2, "original-showcase": 20 + 2 * 2 * 5, "original-no-tless": 32,
                "fixed-point": 10 * (2 + 2 * 10), "fixed-point-damped": 10 * (2 + 2 * 10),
                "anderson": 10 * (2 + 2 * 5), "negative-prompt": 10}
    for name, nfe in expected.items():
        res = run_method(name, model, x, grid, g)
        assert res.nfe == nfe, name
        assert res.latents.shape == x.shape and torch.isfinite(res.latents).all()
    assert run_method("original", model, x, grid, g, refine_iterations=1).nfe == 20 + 2 * 2
    # The analytic model's embeddings carry no gradient: null-text must say so, not run silently.
    with pytest.raises(ValueError, match="gradient"):
        run_method("null-text", model, x, grid, g)
