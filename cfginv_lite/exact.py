"""Inversion that is exact *by construction*: change the sampler so that its steps can be undone.

The solvers of :mod:`cfginv_lite.compensate` keep DDIM and solve its implicit inversion
equation by iterating. The two methods here instead change the sampler: each sampling step
is an explicit, algebraically invertible map of the *pair* of states it keeps, so inversion
is exact up to floating-point round-off - but only with respect to **that** sampler.
Regenerating their inverted noise with plain DDIM is not exact (notebook 05 measures it).

Both keep two latents, so an inversion returns a **pair**, and regeneration needs both:

* EDICT (Wallace, Gokul & Naik, "EDICT: Exact Diffusion Inversion via Coupled
  Transformations", CVPR 2023; the denoising step with its mixing layer, and its inverse): two coupled sequences ``x``, ``y`` (both start
  at the encoded image), each DDIM-updated with the *other's* noise, then mixed with
  ``p = 0.93``. Two guided evaluations per step. Stored: ``(x_T, y_T)``.
* BDIA (Zhang, Lewis & Kleijn, "Exact Diffusion Inversion via Bi-directional Integration
  Approximation", ECCV 2024; the BDIA-DDIM update): each step reuses the state one step further back and
  one guided evaluation per step. Stored: ``(z_N, z_{N-1})``, the noise and its neighbour.

With ``a_s``, ``b_s`` as in :func:`cfginv_lite.ddim.move`, ``move(z, e, s -> r)`` is the DDIM
move. Sampling walks the ascending grid ``ts`` downwards; step ``i`` goes ``s = ts[-1-i] ->
r = ts[-2-i]`` and evaluates the noise at label ``s`` (the source), as :func:`sample_ddim`.

Solvers follow the house style (``(model, latents, timesteps, guidance, ..., callback=None,
progress=True)``, one batched guided call per evaluation, no host sync in the loop). The
callback dict has the 11 keys of :func:`~cfginv_lite.ddim.invert_naive` (``latent`` is the
first latent of the pair after the step, ``noise`` the last guided noise, ``residual`` None:
nothing is solved) plus ``partner``, the second latent of the pair.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .ddim import move
from .guidance import Guidance, check_guidance, guided_noise
from .records import StepCallback, step_info
from .validation import FiniteGuard, check_grid, check_latents, check_real

#: EDICT's mixing weight in the paper (sec. 4) and its public code.
EDICT_MIX = 0.93
#: An often-quoted BDIA gamma (public BDIA-DDIM ports use it for few-step text-to-image sampling,
#: e.g. the BDIA_DDIMScheduler example of Jdh235/diffusers). It is *not* the paper's setting:
#: Zhang et al. (ECCV 2024) study gamma in [0, 1] and we could not confirm one value as theirs.
#: gamma = 1 (the fully bidirectional update) is exact and is this package's default.
BDIA_GAMMA_HALF = 0.5


def _check_mix(mix: Any) -> float:
    mix = check_real("mix", mix)
    if not 0.5 < mix <= 1.0:  # p <= 0.5 makes the inverse mixing divide by a weight that blows up; p = 1: no mixing
        raise ValueError(f"EDICT's mixing weight p must lie in (0.5, 1], got {mix!r} (the paper uses 0.93)")
    return mix


def check_bdia_gamma(gamma: Any) -> float:
    """BDIA's ``gamma``, a real number in (0, 1] (its inverse step divides by it)."""
    gamma = check_real("gamma", gamma)
    if not 0.0 < gamma <= 1.0:  # the inverse divides by gamma; gamma = 0 is plain DDIM, not invertible
        raise ValueError(f"BDIA's gamma must lie in (0, 1], got {gamma!r} (gamma = 0 is plain DDIM, which has no "
                         "exact inverse)")
    return gamma


def _check_partner(model: Any, latents: torch.Tensor, partner: Any, what: str) -> torch.Tensor:
    partner = check_latents(model, partner)
    if partner.shape != latents.shape:
        raise ValueError(f"{what} has shape {tuple(partner.shape)}, the latents {tuple(latents.shape)}")
    return partner.to(latents.dtype)


def _report(callback: StepCallback | None, i: int, steps: int, s: int, r: int, latent: torch.Tensor,
            latent_prev: torch.Tensor, partner: torch.Tensor, noise: torch.Tensor, nfe: int) -> None:
    if callback is not None:
        callback(step_info(i, steps, s, r, (s, s), latent, latent_prev, noise, nfe, partner=partner))


# --------------------------------------------------------------------------- EDICT
@torch.no_grad()
def sample_edict(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    partner: torch.Tensor | None = None,
    mix: float = EDICT_MIX,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """EDICT sampling (Wallace et al. 2023, the coupled denoising step): returns ``x`` at level ``timesteps[0]``.

    Start ``x = latents``, ``y = partner`` (``None``: ``y = x``, generation from noise). Step
    ``s -> r`` with ``p = mix``::

        x' = move(x, eps_w(y; s), s -> r)          # x moved with y's noise
        y' = move(y, eps_w(x'; s), s -> r)         # y moved with the new x's noise
        x  = p x' + (1 - p) y'                      # mixing: keeps x and y close
        y  = p y' + (1 - p) x

    Two guided evaluations (4 NFE per image) per step. EDICT's public code also swaps the
    roles of ``x`` and ``y`` on every other step ("leapfrog"); the paper's equations, used
    here, do not.
    """
    x = check_latents(model, latents)
    y = x if partner is None else _check_partner(model, x, partner, "partner (EDICT's y)")
    mix = _check_mix(mix)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    check_guidance(guidance).check_grid(grid)
    abar, steps, guard, nfe = model.alphas_cumprod, len(grid) - 1, FiniteGuard(x.device), 0
    for i in tqdm(range(steps), desc="EDICT sampling", disable=not progress, leave=False):
        s, r = grid[steps - i], grid[steps - i - 1]
        a_s, a_r = float(abar[s]), float(abar[r])
        x_inter = move(x, guided_noise(model, y, s, s, guidance, sampling_step=i).guided, a_s, a_r)
        noise = guided_noise(model, x_inter, s, s, guidance, sampling_step=i).guided
        y_inter = move(y, noise, a_s, a_r)
        x_new = mix * x_inter + (1 - mix) * y_inter
        y_new = mix * y_inter + (1 - mix) * x_new
        nfe += 4
        guard.update(i, x_new)
        _report(callback, i, steps, s, r, x_new, x, y_new, noise, nfe)
        x, y = x_new, y_new
    guard.raise_if_bad("sample_edict", grid, -1)
    return x


@torch.no_grad()
def invert_edict(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    mix: float = EDICT_MIX,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EDICT inversion (Wallace et al. 2023, the noising step): the exact inverse of :func:`sample_edict`.

    Start ``x = y = latents``; step ``r -> s`` (``r < s``) undoes a sampling step in reverse
    order, each line solving one line of the sampler for its left-hand side::

        y' = (y - (1 - p) x) / p                    # undo the mixing
        x' = (x - (1 - p) y') / p
        y  = (y' - c_e eps_w(x'; s)) / c_z          # move(y, e, s -> r) = c_z y + c_e e, solved for y
        x  = (x' - c_e eps_w(y; s)) / c_z

    Nothing is approximated: each noise is evaluated at the very input the sampler will use,
    so ``sample_edict(*invert_edict(z)) == z`` up to round-off (which the ``1 / p`` of the
    un-mixing amplifies a little at every step). Returns the pair ``(x_T, y_T)``; regenerate
    with ``sample_edict(model, x_T, grid, guidance, partner=y_T)``. 4 NFE per image per step.
    """
    x = y = check_latents(model, latents)
    mix = _check_mix(mix)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    check_guidance(guidance).check_grid(grid)
    abar, steps, guard, nfe = model.alphas_cumprod, len(grid) - 1, FiniteGuard(x.device), 0
    for i in tqdm(range(steps), desc="EDICT inversion", disable=not progress, leave=False):
        r, s = grid[i], grid[i + 1]
        a_s, a_r = float(abar[s]), float(abar[r])
        k = steps - 1 - i                                   # the sampling step this one undoes
        y_inter = (y - (1 - mix) * x) / mix
        x_inter = (x - (1 - mix) * y_inter) / mix
        noise = guided_noise(model, x_inter, s, s, guidance, sampling_step=k).guided
        y_new = _unmove(y_inter, noise, a_s, a_r)
        x_new = _unmove(x_inter, guided_noise(model, y_new, s, s, guidance, sampling_step=k).guided, a_s, a_r)
        nfe += 4
        guard.update(i, x_new)
        _report(callback, i, steps, r, s, x_new, x, y_new, noise, nfe)
        x, y = x_new, y_new
    guard.raise_if_bad("invert_edict", grid, +1)
    return x, y


def _unmove(z_to: torch.Tensor, eps: torch.Tensor, abar_from: float, abar_to: float) -> torch.Tensor:
    """Solve ``move(z, eps, s -> r) = z_to`` for ``z`` with ``eps`` held fixed (the move is affine in ``z``).

    ``move(z, e) = (a_r / a_s) z + c_e e``, so ``z = (z_to - c_e e) * (a_s / a_r)``. Used by the
    exact inversions, where ``eps`` is known because it was evaluated elsewhere.
    """
    a_s, a_r = abar_from ** 0.5, abar_to ** 0.5
    b_s, b_r = (1.0 - abar_from) ** 0.5, (1.0 - abar_to) ** 0.5
    return (z_to - eps * (b_r - a_r * b_s / a_s)) * (a_s / a_r)


# --------------------------------------------------------------------------- BDIA
def bdia_step(z: torch.Tensor, z_up: torch.Tensor, noise: torch.Tensor, abar_s: float, abar_r: float,
              abar_up: float, gamma: float) -> torch.Tensor:
    """One BDIA-DDIM sampling step (Zhang et al. 2024, the BDIA-DDIM update), ``z_i -> z_{i-1}``::

        z_{i-1} = move(z_i, e_i, s -> r) + gamma * (z_{i+1} - move(z_i, e_i, s -> up))

    ``z = z_i`` at level ``s`` (``abar_s``), ``z_up = z_{i+1}`` the state visited before it at
    level ``up``, ``noise = e_i`` the guided noise at ``z_i``. Used by :func:`sample_bdia` and by
    :func:`cfginv_lite.editing.edit` on a BDIA pair; ``gamma`` is not checked here.
    """
    return move(z, noise, abar_s, abar_r) + gamma * (z_up - move(z, noise, abar_s, abar_up))


@torch.no_grad()
def sample_bdia(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    partner: torch.Tensor | None = None,
    gamma: float = 1.0,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """BDIA-DDIM sampling (Zhang et al. 2024, BDIA applied to DDIM): returns the latent at ``timesteps[0]``.

    With ``z_i`` the state at level ``ts[i]`` and ``e_i = eps_w(z_i; ts[i])``::

        z_{i-1} = move(z_i, e_i, i -> i-1) + gamma * (z_{i+1} - move(z_i, e_i, i -> i+1))   # bdia_step

    the DDIM step plus ``gamma`` times the error of the *backward* DDIM step from ``z_i`` to
    the state actually visited before it (``gamma = 0``: DDIM; ``1``: fully bidirectional;
    the authors' README writes the same update with ``1 - gamma``). The first step has no
    earlier state: with ``partner=None`` it is a plain DDIM step from ``latents = z_N`` (the
    paper's sampler from noise); an inversion's pair passes ``partner = z_{N-1}`` and skips it.
    One guided evaluation (2 NFE per image) per step.
    """
    z_next = check_latents(model, latents)            # z_{i+1}
    gamma = check_bdia_gamma(gamma)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    check_guidance(guidance).check_grid(grid)
    abar, steps, guard, nfe = model.alphas_cumprod, len(grid) - 1, FiniteGuard(z_next.device), 0
    if partner is None:                                # first step: plain DDIM, z_N -> z_{N-1}
        s, r = grid[steps], grid[steps - 1]
        noise = guided_noise(model, z_next, s, s, guidance, sampling_step=0).guided
        z, nfe = move(z_next, noise, float(abar[s]), float(abar[r])), 2
        guard.update(0, z)
        _report(callback, 0, steps, s, r, z, z_next, z, noise, nfe)
    else:
        z = _check_partner(model, z_next, partner, "partner (BDIA's z_{N-1})")
    for i in tqdm(range(1, steps), desc="BDIA sampling", disable=not progress, leave=False):
        up, s, r = grid[steps - i + 1], grid[steps - i], grid[steps - i - 1]
        noise = guided_noise(model, z, s, s, guidance, sampling_step=i).guided
        z_prev = bdia_step(z, z_next, noise, float(abar[s]), float(abar[r]), float(abar[up]), gamma)
        nfe += 2
        guard.update(i, z_prev)
        _report(callback, i, steps, s, r, z_prev, z, z, noise, nfe)
        z_next, z = z, z_prev
    guard.raise_if_bad("sample_bdia", grid, -1)
    return z


@torch.no_grad()
def invert_bdia(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    gamma: float = 1.0,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BDIA inversion (Zhang et al. 2024, the update solved for z_{i+1}): the exact inverse of :func:`sample_bdia`.

    ``z_0 = latents``; ``z_1 = move(z_0, e_0, 0 -> 1)`` (one naive DDIM step: any ``z_1``
    would do, the pair is what regeneration needs); then for ``i = 1 .. N-1`` the sampling
    update solved for the state it consumed::

        z_{i+1} = move(z_i, e_i, i -> i+1) + (z_{i-1} - move(z_i, e_i, i -> i-1)) / gamma

    with ``e_i = eps_w(z_i; ts[i])``, exactly the noise the sampler evaluates. One guided
    evaluation per step (2 NFE per image). The ``1 / gamma`` amplifies round-off (and
    everything else) at every step for ``gamma < 1``. Returns ``(z_N, z_{N-1})``;
    regenerate with ``sample_bdia(model, z_N, grid, guidance, partner=z_{N-1}, gamma=gamma)``.
    """
    z_prev = check_latents(model, latents)             # z_{i-1}
    gamma = check_bdia_gamma(gamma)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    check_guidance(guidance).check_grid(grid)
    abar, steps, guard = model.alphas_cumprod, len(grid) - 1, FiniteGuard(z_prev.device)
    noise = guided_noise(model, z_prev, grid[0], grid[0], guidance, sampling_step=steps - 1).guided
    z, nfe = move(z_prev, noise, float(abar[grid[0]]), float(abar[grid[1]])), 2
    guard.update(0, z)
    _report(callback, 0, steps, grid[0], grid[1], z, z_prev, z_prev, noise, nfe)
    for i in tqdm(range(1, steps), desc="BDIA inversion", disable=not progress, leave=False):
        down, s, up = grid[i - 1], grid[i], grid[i + 1]
        noise = guided_noise(model, z, s, s, guidance, sampling_step=steps - i).guided
        z_next = move(z, noise, float(abar[s]), float(abar[up])) + (
            z_prev - move(z, noise, float(abar[s]), float(abar[down]))) / gamma
        nfe += 2
        guard.update(i, z_next)
        _report(callback, i, steps, s, up, z_next, z, z, noise, nfe)
        z_prev, z = z, z_next
    guard.raise_if_bad("invert_bdia", grid, +1)
    return z, z_prev


__all__ = ["BDIA_GAMMA_HALF", "EDICT_MIX", "bdia_step", "check_bdia_gamma", "invert_bdia", "invert_edict", "sample_bdia", "sample_edict"]
