"""Implicit flow inversion: Uni-Inv's reused corrector and the course's fixed point / Anderson on the Euler step,
and the registry of flow methods.

Inverting an Euler *sampling* step ``z_t = z_{t1} - h v_w(z_{t1}, t1)`` (``h = t1 - t``) exactly means
solving ``x = z_t + h v_w(x, t1)`` for ``x = z_{t1}``: the flow twin of the course's fixed-point
DDIM inversion (:mod:`cfginv_lite.compensate`; Pan et al. 2023 "Effective Real Image Editing with
Accelerated Iterative Diffusion Inversion" for the fixed point and Anderson acceleration). It is the same
solver family as the DDIM one: :mod:`cfginv_lite.fixed_point`'s per-image search and Anderson mixing
(Walker & Ni 2011), and its option names (``budget``, ``window``, ``damping``, ``tol``, ``divergence_factor``).

* :func:`invert_uni_inv`: Uni-Inv (Jiao et al. 2025, "UniEdit-Flow: Unleashing Inversion and Editing in
  the Era of Flow Models", arXiv:2504.13109; github.com/DSL-Lab/UniEdit-Flow,
  ``UniInvEulerScheduler``): predictor ``x0 = z_t + h v_prev`` with the previous step's corrector
  velocity, corrector ``z_{t1} = z_t + h v_w(x0, t1)``, whose velocity is reused by the next
  predictor. That is **one** iteration of the fixed point above, warm-started with the reused
  velocity (tests assert equality with :func:`invert_flow_fixed_point`
  ``(budget=1, warm="reuse", average_last=1)``, which returns the map value ``G(x_0)`` itself).
  ``N + 1`` guided evaluations for N steps.
* :func:`invert_flow_fixed_point`: ``budget`` iterations of that map per step; ``window = m > 0``
  mixes the last ``m`` differences (Anderson 1965, type II; Walker & Ni 2011). Each iteration is one
  guided evaluation (2 NFE); the Euler predictor that starts it costs one more unless ``warm="reuse"``.

Why a separate registry (``FLOW_METHODS``) instead of :data:`cfginv_lite.methods.METHODS`: those
entries take an integer DDIM grid and an epsilon model; flow methods take flow times in ``[0, 1]``
and a velocity model, and each names the sampler it is meant to be regenerated with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from .flow import (branch_nfe, check_flow_grid, flow_steps, guided_velocity, invert_euler, invert_fireflow,
                   invert_midpoint, invert_rf_solver, report_flow_step, sample_euler, sample_fireflow,
                   sample_midpoint, sample_rf_solver)
from .fixed_point import (AndersonHistory, Budget, FixedPointSearch, all_stopped, check_fixed_point_options,
                          per_step_budget, where_image)
from .guidance import Guidance, check_guidance
from .methods import NFECounter
from .records import StepCallback
from .validation import FiniteGuard, check_choice, check_latents

Warm = Literal["euler", "reuse"]


@torch.no_grad()
def invert_flow_fixed_point(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                            budget: Budget = 4, window: int = 0, damping: float = 1.0, ridge: float = 1e-8,
                            average_last: int | None = None, tol: float | None = None,
                            divergence_factor: float | None = 2.0, warm: Warm = "euler",
                            callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """Solve ``x = z_t + h v_w(x, t1)`` per step with the course's fixed point (:mod:`cfginv_lite.fixed_point`).

    The map is ``G(x) = z_t + h v_w(x, t1)`` (one guided evaluation, 2 NFE per image); the residual
    of an iterate is the mean absolute value per element of ``G(x) - x``, i.e. of ``z_t - F(x)``
    with ``F(x) = x - h v_w(x, t1)`` the Euler sampling step, as in the DDIM family::

        x_0 = the predictor (warm "euler": z_t + h v_w(z_t, t); "reuse": z_t + h v_last)
        x <- x + damping * (G(x) - x)                    (window = 0; damping = 1: plain FPI)
        x <- x + b f - (dX + b dF) gamma                 (window = m: Anderson, Walker & Ni 2011)

    (Pan et al. 2023, AIDI, for the fixed point and Anderson acceleration in diffusion inversion.)
    Options as :func:`cfginv_lite.fixed_point.invert_fixed_point`: ``budget`` iterations per step
    (a count or one per step), ``window``, ``damping``, ``ridge``, ``average_last``, ``tol`` and
    ``divergence_factor``, with the same per-image keep-best and stopping
    (:class:`~cfginv_lite.fixed_point.FixedPointSearch`) and the same Anderson mixing
    (:class:`~cfginv_lite.fixed_point.AndersonHistory`). ``warm="euler"`` costs one more evaluation per
    step; ``warm="reuse"`` (Uni-Inv's predictor) reuses the velocity at each image's last evaluated
    iterate (the first step evaluates ``v_w(z_0, t_0)`` once). ``budget=1, warm="reuse",
    average_last=1`` returns ``G(x_0)`` itself: Uni-Inv, bit for bit. Callback: ``residual`` (of the
    returned latent; NaN if it was never evaluated), ``residuals``, ``iterations``, ``stopped``.
    """
    z = check_latents(model, latents)
    check_guidance(guidance)
    per_step = per_step_budget(budget, check_flow_grid(times))
    window, damping, ridge, average_last, tol, divergence_factor, _, _ = check_fixed_point_options(
        max(per_step), window, damping, ridge, average_last, tol, divergence_factor, "destination", False)
    check_choice("warm", warm, ("euler", "reuse"))
    pairs, per = flow_steps(times, +1), branch_nfe(model)
    guard, nfe = FiniteGuard(z.device), torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    v_last = None
    for i, (t, t1) in enumerate(tqdm(pairs, desc="invert_flow_fixed_point", disable=not progress, leave=False)):
        h, n = t1 - t, per_step[i]
        if warm == "euler" or v_last is None:
            v_last = guided_velocity(model, z, t, guidance)
            nfe += per
        x = z + h * v_last                                               # x_0: the predictor
        search, history, recent = FixedPointSearch(x, n), AndersonHistory(x, window, damping, ridge), []
        for _ in range(n):
            if all_stopped(search.active):
                break
            v = guided_velocity(model, x, t1, guidance)
            g = z + h * v                                                # G(x)
            r = (g - x).abs().flatten(1).mean(1).double()                # residual of x
            v_last = where_image(search.active, v, v_last)
            go, grew = search.update(x, r, g, tol, divergence_factor)   # keep best, stop per image
            recent = (recent + [g])[-average_last:] if average_last else recent
            x = history.next(x, g, go, grew)                             # damped or Anderson step
        z_next, residual = search.result(x, recent if n and average_last else [])
        nfe += per * search.evals
        guard.update(i, z_next)
        report_flow_step(callback, i, len(pairs), t, t1, z, z_next, v_last, nfe, residual=residual,
                         residuals=search.residual_rows(), iterations=search.evals, stopped=search.stopped)
        z = z_next
    guard.raise_if_bad("invert_flow_fixed_point", check_flow_grid(times), +1)
    return z


@torch.no_grad()
def invert_uni_inv(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                   callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """Uni-Inv (Jiao et al. 2025), written as its paper's predictor-corrector loop (see the module docstring)."""
    z = check_latents(model, latents)
    check_guidance(guidance)
    pairs, per = flow_steps(times, +1), branch_nfe(model)
    guard = FiniteGuard(z.device)
    v_reuse = guided_velocity(model, z, pairs[0][0], guidance)
    nfe = per
    for i, (t, t1) in enumerate(tqdm(pairs, desc="invert_uni_inv", disable=not progress, leave=False)):
        h = t1 - t
        predictor = z + h * v_reuse
        v_reuse = guided_velocity(model, predictor, t1, guidance)   # the corrector velocity, reused next step
        nfe += per
        z_next = z + h * v_reuse
        guard.update(i, z_next)
        report_flow_step(callback, i, len(pairs), t, t1, z, z_next, v_reuse, nfe)
        z = z_next
    guard.raise_if_bad("invert_uni_inv", check_flow_grid(times), +1)
    return z


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class FlowMethod:
    """A flow inversion method, its settings, and the sampler it is regenerated with."""

    invert: Callable[..., torch.Tensor]
    sample: Callable[..., torch.Tensor]
    options: tuple[tuple[str, Any], ...] = ()
    source: str = ""


FLOW_METHODS: dict[str, FlowMethod] = {
    "euler": FlowMethod(invert_euler, sample_euler, source="reversed Euler (SD3/FLUX's sampler run backwards)"),
    "midpoint": FlowMethod(invert_midpoint, sample_midpoint, source="explicit midpoint"),
    "rf-solver": FlowMethod(invert_rf_solver, sample_rf_solver, source="Wang et al. 2024, arXiv:2411.04746"),
    "fireflow": FlowMethod(invert_fireflow, sample_fireflow, source="Deng et al. 2024, arXiv:2412.07517"),
    "uni-inv": FlowMethod(invert_uni_inv, sample_euler, source="Jiao et al. 2025, arXiv:2504.13109"),
    "fixed-point-4": FlowMethod(invert_flow_fixed_point, sample_euler, (("budget", 4),),
                                source="the course's fixed point (budget 4) on the Euler step"),
    "anderson-3": FlowMethod(invert_flow_fixed_point, sample_euler, (("budget", 4), ("window", 3)),
                             source="the course's Anderson (window 3, budget 4) on the Euler step"),
}


@dataclass
class FlowInversion:
    latents: torch.Tensor
    nfe: int
    method: str


def run_flow_method(name: str, model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                    progress: bool = False, **options: Any) -> FlowInversion:
    """Invert with a registered flow method; NFE per image counted from the solver's callback."""
    check_choice("flow method", name, tuple(FLOW_METHODS))
    entry = FLOW_METHODS[name]
    counter = NFECounter()
    z = entry.invert(model, latents, times, guidance, callback=counter, progress=progress,
                     **{**dict(entry.options), **options})
    return FlowInversion(z, counter.nfe, name)


def regenerate_flow(name: str, model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                    callback: StepCallback | None = None, progress: bool = False) -> torch.Tensor:
    """Sample back with the method's own sampler (Euler for the implicit inversions, which invert Euler)."""
    check_choice("flow method", name, tuple(FLOW_METHODS))
    return FLOW_METHODS[name].sample(model, latents, times, guidance, callback=callback, progress=progress)


__all__ = ["FLOW_METHODS", "FlowInversion", "FlowMethod", "invert_flow_fixed_point", "invert_uni_inv",
           "regenerate_flow", "run_flow_method"]
