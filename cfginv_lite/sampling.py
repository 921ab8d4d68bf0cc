"""Sampling: seeded generation, K-LMS as the seed regenerated with, and regeneration.

:func:`generate` samples seeded noise with DDIM (:func:`~cfginv_lite.ddim.sample_ddim`), the
first step of every experiment. :func:`regenerate` turns inverted noise back into a clean
latent: DDIM on the inversion grid, K-LMS as the seed did, or an exact method's own sampler.

The seed's notebook inverted with DDIM on its own grid but regenerated with diffusers'
K-LMS scheduler (``LMSDiscreteScheduler``: Karras et al. 2022's linear multistep sampler
in sigma space), on *that* scheduler's grid. :func:`sample_lms` reproduces that, using the
public diffusers scheduler rather than a re-derivation, so the two mismatches the seed's
method had to live with (a different sampler, a different grid) can be measured.

Units. LMS works on ``x = z / a_t`` (variance-exploding, ``sigma_t = b_t / a_t``); the model
sees ``scale_model_input(x) = x / sqrt(sigma^2 + 1) = a_t x = z``. Its last step goes to
``sigma = 0``, where ``x`` *is* the clean latent, so :func:`sample_lms` returns the same
quantity as :func:`cfginv_lite.ddim.sample_ddim` (whose last level, ``abar_0 = 0.99915``
for SD's schedule, leaves a ``b_0 = 0.029`` noise share - a far smaller difference than the
ones this module is used to measure).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from tqdm.auto import tqdm

from .ddim import sample_ddim
from .guidance import Guidance, guided_noise, make_guidance
from .records import InversionResult, StepCallback, step_info
from .validation import FiniteGuard, NonFiniteLatentError, as_prompt_list, check_choice, check_grid, check_int, \
    check_latents, check_seed

Sampler = Literal["ddim", "lms", "own"]


def lms_scheduler(model: Any, steps: int) -> Any:
    """A fresh ``LMSDiscreteScheduler`` built from ``model.scheduler_config``, set to ``steps``."""
    from diffusers import LMSDiscreteScheduler

    steps = check_int("steps", steps, 1)
    scheduler = LMSDiscreteScheduler.from_config(dict(model.scheduler_config))
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def sample_lms(
    model: Any,
    latents: torch.Tensor,
    steps: int,
    guidance: Guidance,
    *,
    exact_start: bool = False,
    order: int = 4,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Regenerate with K-LMS as the original did; returns the clean latent (sigma = 0).

    ``LMSDiscreteScheduler.from_config(model.scheduler_config)``, ``set_timesteps(steps)``
    (its own grid: ``linspace(0, T-1, steps)`` descending, fractional labels, then sigma 0);
    start ``x = latents * scheduler.init_noise_sigma``; per step
    ``eps_w = guided_noise(scale_model_input(x, t); t, t)`` (one batched call, both branches
    labelled with the scheduler's float timestep) and ``x = scheduler.step(eps_w, t, x).prev_sample``
    (LMS of order ``order``, diffusers' default 4).

    ``exact_start``: the original multiplies the variance-preserving latent ``z_T`` by
    ``init_noise_sigma = sigma_max = b_T / a_T`` (treating it as unit noise), whereas the
    exact change of variables is ``x = z_T / a_T``; the two differ by the factor
    ``b_T = sqrt(1 - abar_T)`` (0.9977 for SD's schedule). ``False`` is faithful.

    Per-step unconditional embeddings (null-text) are refused: they were optimised for the
    DDIM grid and do not belong to LMS's timesteps. Callback keys: ``step, steps, t_from,
    t_to`` (next label, ``None`` for the final step to sigma 0), ``sigma_from, sigma_to,
    label_uncond, label_cond, latent, latent_prev, noise, residual (None), nfe``.
    """
    x = check_latents(model, latents)
    if guidance.uncond_per_step is not None:
        raise ValueError("per-step unconditional embeddings (null-text) belong to the DDIM grid; "
                         "regenerate them with sampler='ddim'")
    order = check_int("order", order, 1)
    scheduler = lms_scheduler(model, steps)
    timesteps = scheduler.timesteps
    sigmas = scheduler.sigmas
    if exact_start:
        # z_T / a_T with a_T = 1 / sqrt(sigma_T^2 + 1), in the scheduler's own float32 sigma.
        start = float((sigmas[0] ** 2 + 1) ** 0.5)
    else:
        start = float(scheduler.init_noise_sigma)
    x = x * start
    guard = FiniteGuard(x.device)
    nfe = 0
    for i, t in enumerate(tqdm(timesteps, desc="K-LMS sampling", disable=not progress, leave=False)):
        label = float(t)
        model_in = scheduler.scale_model_input(x, t)
        est = guided_noise(model, model_in, label, label, guidance)
        nfe += 2
        x_next = scheduler.step(est.guided, t, x, order=order).prev_sample
        guard.update(i, x_next)
        if callback is not None:
            t_to = float(timesteps[i + 1]) if i + 1 < len(timesteps) else None
            callback(step_info(i, len(timesteps), label, t_to, (label, label), x_next, x, est.guided, nfe,
                               sigma_from=float(sigmas[i]), sigma_to=float(sigmas[i + 1])))
        x = x_next
    step = int(guard.first_bad)
    if step >= 0:
        raise NonFiniteLatentError(f"sample_lms: latents became NaN/inf at step {step} (label {float(timesteps[step]):.1f}); "
                                   "in fp16 upcast the UNet to fp32, or lower the guidance scale.")
    return x


def regenerate(
    model: Any,
    latents: torch.Tensor | InversionResult,
    grid: Sequence[int],
    guidance: Guidance | None = None,
    sampler: Sampler = "ddim",
    *,
    callback: StepCallback | None = None,
    progress: bool = False,
    **options: Any,
) -> torch.Tensor:
    """Clean latent from inverted noise: ``"ddim"`` down the inversion ``grid``, ``"lms"`` (the
    seed's K-LMS with ``len(grid) - 1`` steps on its own grid; ``options`` go to
    :func:`sample_lms`, e.g. ``exact_start=True``), or ``"own"``: the sampler the method is
    (meant to be) exact for - an exact pair's own sampler (:mod:`cfginv_lite.exact`), else DDIM.

    ``latents`` may be an :class:`~cfginv_lite.records.InversionResult`; its ``guidance`` is
    then the default (null-text's per-step embeddings live there). ``"own"`` needs a result.
    """
    grid = check_grid(grid, len(model.alphas_cumprod))
    check_choice("sampler", sampler, ("ddim", "lms", "own"))
    result = latents if isinstance(latents, InversionResult) else None
    if result is not None:
        latents, guidance = result.latents, result.guidance if guidance is None else guidance
    if guidance is None:
        raise ValueError("regenerate needs the guidance to regenerate with (or an InversionResult, which carries it)")
    if sampler == "own":
        if result is None:
            raise ValueError('sampler="own" needs the InversionResult (it names the method\'s own sampler), not latents')
        if result.sampler is not None:
            return result.sampler(model, latents, grid, guidance, partner=result.partner, callback=callback,
                                  progress=progress, **options)
        sampler = "ddim"
    if sampler == "ddim":
        if options:
            raise ValueError(f"sample_ddim takes no options, got {sorted(options)}")
        return sample_ddim(model, latents, grid, guidance, callback=callback, progress=progress)
    return sample_lms(model, latents, len(grid) - 1, guidance, callback=callback, progress=progress, **options)


# --------------------------------------------------------------------------- seeded generation
def seeded_noise(shape: Sequence[int], seed: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the CPU with ``seed`` (identical on every device), then moved."""
    gen = torch.Generator("cpu").manual_seed(check_seed(seed))  # 2**70 or 3.5: a clear ValueError
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


@dataclass
class Generated:
    """A seeded batch generated by DDIM at one guidance scale on one grid."""

    prompts: list[str]
    guidance: Guidance
    grid: list[int]
    noise: torch.Tensor        # the true starting noise z_T
    latents: torch.Tensor      # the clean latent DDIM produced
    images: torch.Tensor       # decoded, in [-1, 1]


def generate(model: Any, prompts: Sequence[str], scale: float, grid: Sequence[int], *, seed: int = 0,
             callback: StepCallback | None = None, progress: bool = False) -> Generated:
    """Sample ``len(prompts)`` images from seeded noise with DDIM at guidance ``scale``."""
    prompts, grid = as_prompt_list(prompts), list(grid)  # a string is one prompt; an iterator is read once
    guidance = make_guidance(model, prompts, scale)
    noise = seeded_noise((len(prompts), *model.latent_shape), seed, model.device, model.dtype)
    latents = sample_ddim(model, noise, grid, guidance, callback=callback, progress=progress)
    return Generated(prompts, guidance, grid, noise, latents, model.decode(latents))


__all__ = ["Generated", "Sampler", "generate", "lms_scheduler", "regenerate", "sample_lms", "seeded_noise"]
