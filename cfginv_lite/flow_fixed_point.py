"""Implicit flow inversion: Uni-Inv's reused corrector and the course's fixed point / Anderson on the Euler step,
and the registry of flow methods.

Inverting an Euler *sampling* step ``z_t = z_{t1} - h v_w(z_{t1}, t1)`` (``h = t1 - t``) exactly means
solving ``x = z_t + h v_w(x, t1)`` for ``x = z_{t1}``: the flow twin of the course's fixed-point
DDIM inversion (:mod:`cfginv_lite.compensate`; Pan et al. 2023 "Effective Real Image Editing with
Accelerated Iterative Diffusion Inversion" for the fixed point and Anderson acceleration).

* :func:`invert_uni_inv`: Uni-Inv (Jiao et al. 2025, "UniEdit-Flow: Unleashing Inversion and Editing in
  the Era of Flow Models", arXiv:2504.13109; github.com/DSL-Lab/UniEdit-Flow,
  ``UniInvEulerScheduler``): predictor ``x0 = z_t + h v_prev`` with the previous step's corrector
  velocity, corrector ``z_{t1} = z_t + h v_w(x0, t1)``, whose velocity is reused by the next
  predictor. That is **one** iteration of the fixed point above, warm-started with the reused
  velocity (tests assert equality with :func:`invert_flow_fixed_point` ``(iterations=1, warm="reuse")``).
  ``N + 1`` guided evaluations for N steps.
* :func:`invert_flow_fixed_point`: ``iterations`` iterations of that map per step; ``window = m > 0``
  mixes the last ``m`` residuals (Anderson 1965, type II; Walker & Ni 2011). Each iteration is one
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
from .guidance import Guidance, check_guidance
from .methods import NFECounter
from .records import StepCallback
from .validation import FiniteGuard, check_choice, check_int, check_latents

Warm = Literal["euler", "reuse"]


def _anderson(xs: list[torch.Tensor], fs: list[torch.Tensor], reg: float = 1e-8) -> torch.Tensor:
    """Type-II Anderson mixing per image: ``x+ = f_k - dF gamma``, ``gamma = argmin |g_k - dG gamma|``, ``g = f - x``."""
    g = [f - x for x, f in zip(xs, fs)]
    b = xs[0].shape[0]
    dg = torch.stack([(g[j + 1] - g[j]).reshape(b, -1) for j in range(len(g) - 1)], dim=2)   # (B, n, m)
    df = torch.stack([(fs[j + 1] - fs[j]).reshape(b, -1) for j in range(len(fs) - 1)], dim=2)
    gram = dg.transpose(1, 2) @ dg
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    scale = gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30).view(-1, 1, 1)
    gamma = torch.linalg.solve(gram + reg * scale * eye, dg.transpose(1, 2) @ g[-1].reshape(b, -1, 1))
    return (fs[-1].reshape(b, -1, 1) - df @ gamma).reshape(xs[0].shape)


@torch.no_grad()
def invert_flow_fixed_point(model: Any, latents: torch.Tensor, times: Sequence[float], guidance: Guidance, *,
                            iterations: int = 4, window: int = 0, warm: Warm = "euler",
                            callback: StepCallback | None = None, progress: bool = True) -> torch.Tensor:
    """Solve ``z_{t1} = z_t + h v_w(z_{t1}, t1)`` per step by ``iterations`` fixed-point iterations.

    ``warm="euler"``: start from the Euler predictor ``z_t + h v_w(z_t, t)`` (one more evaluation);
    ``warm="reuse"``: start from ``z_t + h v_last`` with the last evaluated velocity (Uni-Inv's
    predictor; the first step evaluates ``v_w(z_0, t_0)`` once). ``window = m >= 1``: Anderson
    mixing over the last ``m + 1`` iterates. Callback adds ``residual``: per image, the RMS of
    ``z_t + h v_w(x, t1) - x`` at the last iterate ``x`` the network evaluated.
    """
    z = check_latents(model, latents)
    check_guidance(guidance)
    iterations = check_int("iterations", iterations, minimum=1, maximum=100)
    window = check_int("window", window, minimum=0, maximum=10)
    check_choice("warm", warm, ("euler", "reuse"))
    pairs, per = flow_steps(times, +1), branch_nfe(model)
    guard = FiniteGuard(z.device)
    nfe, v_last = 0, None
    for i, (t, t1) in enumerate(tqdm(pairs, desc="invert_flow_fixed_point", disable=not progress, leave=False)):
        h = t1 - t
        if warm == "euler" or v_last is None:
            v_last = guided_velocity(model, z, t, guidance)
            nfe += per
        x = z + h * v_last
        xs, fs = [], []
        for _ in range(iterations):
            v_last = guided_velocity(model, x, t1, guidance)
            nfe += per
            f = z + h * v_last
            xs, fs = (xs + [x])[-(window + 1):], (fs + [f])[-(window + 1):]
            x = _anderson(xs, fs) if window and len(xs) > 1 else f
        residual = (fs[-1] - xs[-1]).flatten(1).pow(2).mean(1).sqrt()
        guard.update(i, x)
        report_flow_step(callback, i, len(pairs), t, t1, z, x, v_last, nfe, residual=residual)
        z = x
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
    "fixed-point-4": FlowMethod(invert_flow_fixed_point, sample_euler, (("iterations", 4),),
                                source="the course's fixed point on the Euler step"),
    "anderson-3": FlowMethod(invert_flow_fixed_point, sample_euler, (("iterations", 4), ("window", 3)),
                             source="the course's Anderson (window 3, 4 iterations) on the Euler step"),
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
