"""Rectified-flow maths and the explicit flow solvers (Euler, midpoint, RF-Solver, FireFlow).

Convention (Stable Diffusion 3, Esser et al. 2024, "Scaling Rectified Flow Transformers for
High-Resolution Image Synthesis", eq. 1-3; Liu et al. 2022, "Flow Straight and Fast"):
``z_t = (1 - t) x0 + t noise`` with ``t in [0, 1]`` and velocity ``v = dz/dt = noise - x0``.
Sampling integrates from ``t = 1`` (noise) down to ``t = 0``; inversion integrates the same ODE
upwards. A flow model exposes ``predict_velocity(z, t, emb)`` (``t`` a ``(B,)`` tensor); classifier-
free guidance mixes the two branches' velocities exactly as DDIM mixes noises (Ho & Salimans 2022,
eq. 6): ``v_w = v_u + w (v_c - v_u)``, both branches in **one** batched call.

DDIM is Euler in flow coordinates. With ``a = sqrt(abar)``, ``b = sqrt(1 - abar)`` the DDIM latent
``z = a x0 + b eps`` maps to ``z_flow = z / (a + b) = (1 - s) x0 + s eps`` with ``s = b / (a + b)``;
a DDIM move (Song et al. 2021, eq. 12) keeps ``x0_hat`` and ``eps_hat`` fixed, i.e. moves ``z_flow``
along ``z_flow + (s' - s) (eps_hat - x0_hat)``: an Euler step of the velocity ``eps - x0``.
:class:`EpsilonAsFlow` wraps any epsilon model of the course this way (tests and notebook 05b
assert that DDIM inversion and reversed Euler then agree to float tolerance). The guided velocity
is linear in the guided noise, so this holds at every guidance scale.

Solvers follow :mod:`cfginv_lite.ddim`'s house style: one function ``(model, latents, times,
guidance, *, callback=None, progress=True)`` per solver, one loop, a callback dict per step
(``step, steps, t_from, t_to, latent, latent_prev, velocity, nfe``), NFE counted per image and
branch (a guided evaluation = 2). ``times`` is an ascending grid in ``[0, 1]`` (:func:`flow_grid`);
inversion walks it upwards, sampling downwards. Implicit inversions (Uni-Inv, fixed point,
Anderson) are in :mod:`cfginv_lite.flow_fixed_point`.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .guidance import Guidance, cfg_combine, check_guidance, expand_batch
from .records import StepCallback, step_info
from .validation import FiniteGuard, check_int, check_latents, check_real


# --------------------------------------------------------------------------- grids
def flow_grid(steps: int, shift: float = 1.0) -> list[float]:
    """Ascending flow times ``0 = t_0 < ... < t_N = 1``: ``linspace``, optionally shifted as in SD3
    (Esser et al. 2024, sec. 5.3.2: ``t' = shift t / (1 + (shift - 1) t)``; ``shift > 1`` spends more
    steps near the noise)."""
    steps = check_int("steps", steps, minimum=1)
    shift = check_real("shift", shift, low=0.0, low_open=True)
    return [shift * (k / steps) / (1 + (shift - 1) * (k / steps)) for k in range(steps + 1)]


def check_flow_grid(times: Any) -> list[float]:
    """Strictly increasing finite flow times in ``[0, 1]``, at least two."""
    if isinstance(times, (str, bytes)) or not hasattr(times, "__iter__"):
        raise ValueError(f"flow times must be a sequence of numbers in [0, 1], got {type(times).__name__}")
    grid = []
    for t in times:
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(float(t)):
            raise ValueError(f"flow times must be finite real numbers, got {t!r}")
        grid.append(float(t))
    if len(grid) < 2:
        raise ValueError("a flow grid needs at least 2 times (steps >= 1)")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"flow times must be strictly increasing, got {grid}")
    if grid[0] < 0 or grid[-1] > 1:
        raise ValueError(f"flow times must lie in [0, 1], got {grid[0]}..{grid[-1]}")
    return grid


def check_flow_model(model: Any) -> Any:
    """A flow solver needs ``predict_velocity``; an epsilon model gets a message naming :class:`EpsilonAsFlow`."""
    if not callable(getattr(model, "predict_velocity", None)):
        raise TypeError(f"model {getattr(model, 'name', type(model).__name__)!r} has no predict_velocity: flow "
                        "solvers need a rectified-flow model (load_model('digits-flow')) or EpsilonAsFlow(model)")
    return model


# --------------------------------------------------------------------------- guided velocity
def guided_velocity(model: Any, z: torch.Tensor, t: float, guidance: Guidance) -> torch.Tensor:
    """``v_w(z, t) = v(z, t, u) + w (v(z, t, c) - v(z, t, u))`` in one batched network call.

    ``u`` is ``guidance.uncond`` (``""`` or a negative prompt). A model with
    ``guidance_embedded = True`` (a guidance-distilled student, Meng et al. 2023) takes the
    scale as an input and has no unconditional branch: one call, 1 NFE per image.
    """
    batch = z.shape[0]
    cond = expand_batch(guidance.cond, batch, "conditional embeddings")
    if getattr(model, "guidance_embedded", False):
        times = torch.full((batch,), float(t), dtype=torch.float64, device=z.device)
        scales = torch.full((batch,), guidance.scale, dtype=torch.float32, device=z.device)
        return model.predict_velocity(z, times, cond, scales)
    uncond = expand_batch(guidance.uncond, batch, "unconditional embeddings")
    times = torch.full((2 * batch,), float(t), dtype=torch.float64, device=z.device)  # float64: exact grid times
    v = model.predict_velocity(torch.cat([z, z]), times, torch.cat([uncond, cond]))
    v_u, v_c = v.chunk(2)
    return cfg_combine(v_u, v_c, guidance.scale)


def branch_nfe(model: Any) -> int:
    """Network evaluations per image of one guided velocity: 2 (two branches), 1 for a distilled student."""
    return 1 if getattr(model, "guidance_embedded", False) else 2


# --------------------------------------------------------------------------- DDIM <-> flow
def flow_time_of_abar(abar: float) -> float:
    """``s = b / (a + b)``: the flow time of a DDIM level with cumulative alpha ``abar``."""
    a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
    return b / (a + b)


def ddim_to_flow(z: torch.Tensor, abar: float) -> torch.Tensor:
    """A DDIM latent at level ``abar`` in flow coordinates: ``z / (a + b)``."""
    return z / (math.sqrt(abar) + math.sqrt(1.0 - abar))


def flow_to_ddim(z: torch.Tensor, s: float) -> torch.Tensor:
    """Inverse of :func:`ddim_to_flow` at flow time ``s`` (``a + b = 1 / sqrt((1-s)^2 + s^2)``)."""
    return z * ((1 - s) ** 2 + s ** 2) ** -0.5


class EpsilonAsFlow:
    """An epsilon model of the course (:class:`~cfginv_lite.models.protocol.DiffusionModel`) seen as a flow.

    At flow time ``s`` the DDIM level is ``abar = (1-s)^2 / ((1-s)^2 + s^2)`` (a fractional label
    found by inverting the schedule's piecewise-linear ``abar(t)``, as :func:`cfginv_lite.ddim.abar_at`
    reads it), and ``v = eps - x0_hat`` with ``x0_hat = (z_ddim - b eps) / a``. Exact maths, no
    training: the "converted model" of the DDIM == Euler check.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name
        self._abar = model.alphas_cumprod.to(torch.float64)

    def __getattr__(self, item: str) -> Any:  # latent_shape, device, dtype, encode, decode, encode_prompt
        return getattr(self.model, item)

    def flow_times(self, grid: Sequence[int]) -> list[float]:
        """The flow times of integer DDIM levels (the grid DDIM inversion walks)."""
        return [flow_time_of_abar(float(self._abar[int(t)])) for t in grid]

    def label_of(self, abar: float) -> float:
        """The fractional DDIM label whose (linearly interpolated) ``abar`` is ``abar``."""
        table = self._abar
        lo_end, hi_end = float(table[-1]), float(table[0])
        if abs(abar - lo_end) < 1e-9 or abs(abar - hi_end) < 1e-9:  # a grid end, up to float rounding
            abar = min(max(abar, lo_end), hi_end)
        if not lo_end <= abar <= hi_end:
            raise ValueError(f"flow time {flow_time_of_abar(abar):.4f} (abar {abar:.6g}) lies outside the epsilon model's "
                             f"schedule, flow times {flow_time_of_abar(hi_end):.4f}..{flow_time_of_abar(lo_end):.4f}; "
                             "use EpsilonAsFlow.flow_times(grid) for its grid")
        lo = int(torch.searchsorted(-table, torch.tensor(-abar, dtype=torch.float64), right=True)) - 1
        lo = min(max(lo, 0), len(table) - 2)
        frac = (float(table[lo]) - abar) / (float(table[lo]) - float(table[lo + 1]))
        return lo + frac

    def predict_velocity(self, z: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        s = float(t[0])  # the solvers pass one time per call, built on the host from a Python float
        abar = (1 - s) ** 2 / ((1 - s) ** 2 + s ** 2)
        a, b = math.sqrt(abar), math.sqrt(1 - abar)
        zd = z * (a + b)
        label = torch.full((z.shape[0],), self.label_of(abar), dtype=torch.float32, device=z.device)
        eps = self.model.predict_noise(zd, label, embeddings)
        return eps - (zd - b * eps) / a


# --------------------------------------------------------------------------- solvers
def report_flow_step(callback: StepCallback | None, i: int, steps: int, t: float, t1: float, z_prev: torch.Tensor,
            z: torch.Tensor, v: torch.Tensor, nfe: int, **extra: Any) -> None:
    """The step's :class:`~cfginv_lite.records.StepInfo`: flow times as levels and labels, the guided
    velocity as ``noise`` (and ``velocity``)."""
    if callback is not None:
        callback(step_info(i, steps, t, t1, (t, t), z, z_prev, v, nfe, velocity=v, **extra))


def flow_steps(times: Sequence[float], direction: int) -> list[tuple[float, float]]:
    """The ``(t, t')`` pairs a solver walks: up the checked grid (``direction > 0``, inversion) or down it."""
    grid = check_flow_grid(times)
    pairs = list(zip(grid, grid[1:]))
    return pairs if direction > 0 else [(b, a) for a, b in reversed(pairs)]


def _start(model: Any, latents: torch.Tensor, guidance: Guidance) -> torch.Tensor:
    check_flow_model(model)
    check_guidance(guidance)
    return check_latents(model, latents)


def _euler(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, direction: int,
           callback: StepCallback | None, progress: bool, name: str) -> torch.Tensor:
    """Euler: ``z' = z + (t' - t) v_w(z, t)``, up (inversion) or down (sampling) the grid."""
    z = _start(model, latents, guidance)
    pairs, per, nfe = flow_steps(times, direction), branch_nfe(model), 0
    guard = FiniteGuard(z.device)
    for i, (t, t1) in enumerate(tqdm(pairs, desc=name, disable=not progress, leave=False)):
        v = guided_velocity(model, z, t, guidance)
        nfe += per
        z_next = z + (t1 - t) * v
        guard.update(i, z_next)
        report_flow_step(callback, i, len(pairs), t, t1, z, z_next, v, nfe)
        z = z_next
    guard.raise_if_bad(name, check_flow_grid(times), direction)
    return z


@torch.no_grad()
def invert_euler(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                 callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """Reversed Euler, the flow twin of naive DDIM inversion: ``z_{t1} = z_t + (t1 - t) v_w(z_t, t)``.

    The velocity at the destination is unknown and replaced by the one at the source, as DDIM
    inversion replaces ``eps(z_{t1})`` by ``eps(z_t)`` (RF-Inversion's ``gamma = 0`` ODE, Rout et al.
    2024, arXiv:2410.10792). 2 NFE per step (1 for a distilled student).
    """
    return _euler(model, latents, times, guidance, +1, callback, progress, "invert_euler")


@torch.no_grad()
def sample_euler(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                 callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """Euler sampling from ``t = times[-1]`` down to ``times[0]`` (the SD3/FLUX default sampler)."""
    return _euler(model, latents, times, guidance, -1, callback, progress, "sample_euler")


def _midpoint(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, direction: int,
              callback: StepCallback | None, progress: bool, name: str, taylor: bool) -> torch.Tensor:
    """Midpoint (Runge 1895) or RF-Solver-2 (``taylor=True``): 2 guided evaluations per step."""
    z = _start(model, latents, guidance)
    pairs, per, nfe = flow_steps(times, direction), branch_nfe(model), 0
    guard = FiniteGuard(z.device)
    for i, (t, t1) in enumerate(tqdm(pairs, desc=name, disable=not progress, leave=False)):
        h = t1 - t
        v = guided_velocity(model, z, t, guidance)
        v_mid = guided_velocity(model, z + 0.5 * h * v, t + 0.5 * h, guidance)
        nfe += 2 * per
        if taylor:  # z + h v + h^2/2 v', with v' = (v_mid - v) / (h/2)
            z_next = z + h * v + 0.5 * h * h * ((v_mid - v) / (0.5 * h))
        else:
            z_next = z + h * v_mid
        guard.update(i, z_next)
        report_flow_step(callback, i, len(pairs), t, t1, z, z_next, v_mid, nfe)
        z = z_next
    guard.raise_if_bad(name, check_flow_grid(times), direction)
    return z


@torch.no_grad()
def invert_midpoint(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                    callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """Explicit midpoint up the grid: ``z_{t1} = z_t + h v_w(z_t + h/2 v_w(z_t, t), t + h/2)``. 4 NFE/step."""
    return _midpoint(model, latents, times, guidance, +1, callback, progress, "invert_midpoint", False)


@torch.no_grad()
def sample_midpoint(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                    callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """Explicit midpoint down the grid (4 NFE per step)."""
    return _midpoint(model, latents, times, guidance, -1, callback, progress, "sample_midpoint", False)


@torch.no_grad()
def invert_rf_solver(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                     callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """RF-Solver-2 inversion (Wang et al. 2024, "Taming Rectified Flow for Inversion and Editing",
    arXiv:2411.04746, eq. 8; github.com/wangjiangshan0725/RF-Solver-Edit): the second-order Taylor
    step ``z + h v + h^2/2 v'`` with ``v'`` a finite difference over a half step. Written as the paper
    writes it; term for term it is the explicit midpoint rule (tests assert equality to float
    tolerance). 4 NFE per step."""
    return _midpoint(model, latents, times, guidance, +1, callback, progress, "invert_rf_solver", True)


@torch.no_grad()
def sample_rf_solver(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                     callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """RF-Solver-2 sampling (the paper's eq. 8 down the grid)."""
    return _midpoint(model, latents, times, guidance, -1, callback, progress, "sample_rf_solver", True)


def _fireflow(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, direction: int,
              callback: StepCallback | None, progress: bool, name: str) -> torch.Tensor:
    """FireFlow (Deng et al. 2024, "FireFlow: Fast Inversion of Rectified Flow for Image Semantic Editing",
    arXiv:2412.07517; github.com/HolmesShuan/FireFlow): a midpoint step whose first velocity is the
    previous step's midpoint velocity (reused, not recomputed). ``N + 1`` guided evaluations for N steps."""
    z = _start(model, latents, guidance)
    pairs, per = flow_steps(times, direction), branch_nfe(model)
    guard = FiniteGuard(z.device)
    v_reuse = guided_velocity(model, z, pairs[0][0], guidance)
    nfe = per
    for i, (t, t1) in enumerate(tqdm(pairs, desc=name, disable=not progress, leave=False)):
        h = t1 - t
        v_mid = guided_velocity(model, z + 0.5 * h * v_reuse, t + 0.5 * h, guidance)
        nfe += per
        z_next = z + h * v_mid
        guard.update(i, z_next)
        report_flow_step(callback, i, len(pairs), t, t1, z, z_next, v_mid, nfe)
        z, v_reuse = z_next, v_mid
    guard.raise_if_bad(name, check_flow_grid(times), direction)
    return z


@torch.no_grad()
def invert_fireflow(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                    callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """FireFlow inversion (see :func:`_fireflow`): 2 (N + 1) NFE for N steps."""
    return _fireflow(model, latents, times, guidance, +1, callback, progress, "invert_fireflow")


@torch.no_grad()
def sample_fireflow(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                    callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """FireFlow sampling (the same reuse down the grid)."""
    return _fireflow(model, latents, times, guidance, -1, callback, progress, "sample_fireflow")


__all__ = ["EpsilonAsFlow", "branch_nfe", "check_flow_grid", "check_flow_model", "ddim_to_flow", "flow_grid", "flow_steps",
           "flow_time_of_abar", "flow_to_ddim", "guided_velocity", "invert_euler", "invert_fireflow",
           "invert_midpoint", "invert_rf_solver", "sample_euler", "sample_fireflow", "sample_midpoint",
           "report_flow_step", "sample_rf_solver"]
