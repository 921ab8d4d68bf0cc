"""DDIM: the update, its conversions, and its two plain loops (naive inversion, sampling).

Equations (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021, eq. 12
with ``sigma_t = 0``), with ``a_t = sqrt(abar_t)`` and ``b_t = sqrt(1 - abar_t)``::

    x0_hat = (z_s - b_s * eps) / a_s                     # predicted clean latent
    move(z_s, eps, s -> r) = a_r * x0_hat + b_r * eps      # same formula both ways

Sampling moves from high noise to low (``s > r``), inversion from low to high (``s < r``).
The schedule (``abar``) comes from :mod:`cfginv_lite.schedule` (diffusers' schedulers).

The two loops are the house example of a solver, in the style of k-diffusion's
``sampling.py``: one function ``(model, latents, timesteps, guidance, ..., callback=None,
progress=True)`` that returns the final latent and reports every step to ``callback`` as a
:class:`~cfginv_lite.records.StepInfo`. No solver plots.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import torch
from tqdm.auto import tqdm

from .guidance import Guidance, check_guidance, guided_noise
from .records import StepCallback, step_info
from .validation import FiniteGuard, check_choice, check_grid, check_latents

LabelConvention = Literal["source", "destination"]


# --------------------------------------------------------------------------- the DDIM move
def move(z: torch.Tensor, eps: torch.Tensor, abar_from: float, abar_to: float) -> torch.Tensor:
    """One deterministic DDIM move of ``z`` from level ``s`` to level ``r``.

    ``move(z, e, s -> r) = a_r * (z - b_s * e) / a_s + b_r * e`` (DDIM eq. 12, ``sigma=0``),
    with ``a = sqrt(abar)``, ``b = sqrt(1 - abar)``. ``abar_from``/``abar_to`` are the
    cumulative alphas of the two levels. Coefficients are formed in float64 and applied in
    the latent's dtype, so that ``move(move(z, e, s->r), e, r->s) == z`` to float precision.
    """
    a_s, a_r = math.sqrt(abar_from), math.sqrt(abar_to)
    b_s, b_r = math.sqrt(1.0 - abar_from), math.sqrt(1.0 - abar_to)
    # z * (a_r / a_s) + eps * (b_r - a_r * b_s / a_s): two coefficients, one fused expression.
    return z * (a_r / a_s) + eps * (b_r - a_r * b_s / a_s)


def predicted_x0(z: torch.Tensor, eps: torch.Tensor, abar: float) -> torch.Tensor:
    """Tweedie / DDIM estimate of the clean latent: ``x0 = (z - b_t * eps) / a_t``."""
    return (z - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)


def v_to_epsilon(v: torch.Tensor, z: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Convert a v-prediction into a noise prediction.

    With ``z = a_t x0 + b_t eps`` and ``v = a_t eps - b_t x0`` (Salimans & Ho 2022, sec. 4):
    ``eps = a_t * v + b_t * z``. ``abar`` broadcasts per batch item, shape ``(B,)``.
    """
    abar = abar.to(device=z.device, dtype=torch.float64).view(-1, *([1] * (z.ndim - 1)))
    a, b = abar.sqrt().to(z.dtype), (1.0 - abar).sqrt().to(z.dtype)
    return a * v + b * z


def epsilon_to_v(eps: torch.Tensor, z: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`v_to_epsilon`: ``v = (eps - b_t z) / a_t`` (equivalently ``a eps - b x0``)."""
    abar = abar.to(device=z.device, dtype=torch.float64).view(-1, *([1] * (z.ndim - 1)))
    a, b = abar.sqrt().to(z.dtype), (1.0 - abar).sqrt().to(z.dtype)
    return (eps - b * z) / a


def abar_at(alphas_cumprod: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``abar`` at possibly fractional labels, linearly interpolated in ``t`` (float64).

    Fractional labels arise from the ``tless`` offset; integer labels return the table value.
    Computed on the labels' device (keep a copy of the table there to avoid a transfer), so
    a v-prediction model converting its output never forces a GPU -> CPU sync.
    """
    table = alphas_cumprod.to(device=labels.device, dtype=torch.float64)
    t = labels.detach().to(torch.float64).clamp(0, len(table) - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=len(table) - 1)
    frac = t - lo.to(torch.float64)
    return table[lo] * (1 - frac) + table[hi] * frac


# --------------------------------------------------------------------------- solvers
@torch.no_grad()
def invert_naive(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    label: LabelConvention = "source",
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Naive DDIM inversion: ``z_{t1} = move(z_t, eps_w(z_t; l, l), t -> t1)``.

    The noise at the *destination* ``t1`` is unknown, so it is approximated by a noise
    estimate at a nearby label ``l``:

    * ``label="source"``: ``l = t`` (the original notebook, the seed).
    * ``label="destination"``: ``l = t1`` (diffusers' ``DDIMInverseScheduler`` since PR #5145;
      also Mokady et al.'s null-text code, whose ``next_step`` moves from ``t - 20`` to ``t``
      with the noise predicted at the current latent with the label ``t``, the level it moves to).

    The approximation is good when ``eps_w`` barely changes between neighbouring levels,
    which guidance scales above 1 break. Returns the latent at ``timesteps[-1]``.
    Callback: a :class:`~cfginv_lite.records.StepInfo` (``residual`` None: unknown without
    an extra evaluation).
    """
    check_choice("label", label, ("source", "destination"))
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    abar = model.alphas_cumprod
    guard = FiniteGuard(z.device)
    steps = len(grid) - 1
    nfe = 0
    for i in tqdm(range(steps), desc="DDIM inversion", disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        lab = t if label == "source" else t1
        est = guided_noise(model, z, lab, lab, guidance)
        nfe += 2
        z_next = move(z, est.guided, float(abar[t]), float(abar[t1]))
        guard.update(i, z_next)
        if callback is not None:
            callback(step_info(i, steps, t, t1, (lab, lab), z_next, z, est.guided, nfe))
        z = z_next
    guard.raise_if_bad("invert_naive", grid, +1)
    return z


@torch.no_grad()
def sample_ddim(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Deterministic DDIM sampling (``eta = 0``) down the ascending grid ``timesteps``.

    Step ``i`` moves ``s = ts[-1-i] -> r = ts[-2-i]`` with ``eps_w(z_s; s, s)``; with null-text
    embeddings ``guidance.uncond_per_step[i]`` replaces the unconditional embedding; they
    must have been optimised on this grid (``ValueError`` otherwise). Returns the latent at level ``timesteps[0]`` (level 0: the clean latent).
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    check_guidance(guidance).check_grid(grid)
    abar = model.alphas_cumprod
    guard = FiniteGuard(z.device)
    steps = len(grid) - 1
    nfe = 0
    for i in tqdm(range(steps), desc="DDIM sampling", disable=not progress, leave=False):
        s, r = grid[steps - i], grid[steps - i - 1]
        est = guided_noise(model, z, s, s, guidance, sampling_step=i)
        nfe += 2
        z_next = move(z, est.guided, float(abar[s]), float(abar[r]))
        guard.update(i, z_next)
        if callback is not None:
            callback(step_info(i, steps, s, r, (s, s), z_next, z, est.guided, nfe))
        z = z_next
    guard.raise_if_bad("sample_ddim", grid, -1)
    return z


__all__ = ["LabelConvention", "abar_at", "epsilon_to_v", "invert_naive", "move", "predicted_x0", "sample_ddim",
           "v_to_epsilon"]
