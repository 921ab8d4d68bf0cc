"""What solvers report: the per-step callback record, stop codes, and the inversion result.

Every solver calls its ``callback`` once per step with a :class:`StepInfo`, built by
:func:`step_info` (the one place the record is assembled, so every solver's record has the
same keys and types). Per-image values stay tensors on the latents' device: building a record
never forces a host sync. Every registered inversion method returns an
:class:`InversionResult` (:mod:`cfginv_lite.methods`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, TypedDict

import torch

from .guidance import Guidance

#: Callback entries shaped like the latents (``(B, C, H, W)``); every other tensor a solver
#: reports is per image (``(B,)`` or ``(K, B)``) and small.
LATENT_KEYS: tuple[str, ...] = ("latent", "latent_prev", "noise")


class Stop(enum.IntEnum):
    """Why an image's refinement of a step ended (the record's ``stopped`` codes)."""

    MAX_ITER = 0    # ran every iteration
    THRESHOLD = 1   # early stop: error below the threshold / tolerance
    DIVERGED = 2    # non-finite, or grew past divergence_factor x its best
    SKIPPED = 3     # step not refined (or 0 iterations)


class StepInfo(TypedDict, total=False):
    """One solver step, as every solver reports it to its ``callback``.

    Always present: ``step`` (index), ``steps`` (how many), ``t_from``/``t_to`` (levels),
    ``label_uncond``/``label_cond`` (the network's timestep labels of the two branches; None
    for a branch not evaluated), ``latent`` (after the step), ``latent_prev`` (before it),
    ``noise`` (the guided noise the step used), ``residual`` (``(B,)`` float64 per image, or
    None where the solver cannot know it without an extra evaluation) and ``nfe`` (``(B,)``
    long: cumulative network evaluations per image, one branch of one image = 1).
    Iterative solvers add ``residuals`` (``(K, B)``), ``iterations`` and ``stopped`` (``(B,)``,
    a :class:`Stop` code); other solvers add their own extras (``partner``, ``phase``, ...).
    """

    step: int
    steps: int
    t_from: float | None
    t_to: float | None
    label_uncond: float | None
    label_cond: float | None
    latent: torch.Tensor
    latent_prev: torch.Tensor
    noise: torch.Tensor
    residual: torch.Tensor | None
    nfe: torch.Tensor
    residuals: torch.Tensor
    iterations: torch.Tensor
    stopped: torch.Tensor


StepCallback = Callable[[StepInfo], None]


def step_info(step: int, steps: int, t_from: float | None, t_to: float | None,
              labels: tuple[float | None, float | None], latent: torch.Tensor, latent_prev: torch.Tensor,
              noise: torch.Tensor, nfe: int | torch.Tensor, residual: torch.Tensor | None = None,
              **extra: Any) -> StepInfo:
    """The :class:`StepInfo` of one step; ``nfe`` as an int (the same for every image) becomes ``(B,)``.

    ``nfe`` given as a tensor is copied, so a solver that keeps counting in place cannot change
    a record already handed out.
    """
    if isinstance(nfe, torch.Tensor):
        nfe = nfe.clone()
    else:
        nfe = torch.full((latent.shape[0],), int(nfe), dtype=torch.long, device=latent.device)
    return StepInfo(step=step, steps=steps, t_from=t_from, t_to=t_to, label_uncond=labels[0], label_cond=labels[1],
                    latent=latent, latent_prev=latent_prev, noise=noise, residual=residual, nfe=nfe,
                    **extra)  # type: ignore[typeddict-item]


@dataclass
class InversionResult:
    """What every inversion method returns (the registry's entries, the baselines).

    ``latents``: the inverted noise; ``guidance``: what regeneration must use (null-text puts
    its per-step unconditional embeddings here); ``nfe``/``nfe_backward``: forward network
    evaluations and backward passes per image (one branch of one image = 1; the max over the
    batch); ``seconds``: filled in by :func:`cfginv_lite.methods.run_method`;
    ``partner``/``sampler``: what an exact-by-construction method (:mod:`cfginv_lite.exact`)
    needs to regenerate exactly (:func:`cfginv_lite.sampling.regenerate` with ``sampler="own"``).
    """

    latents: torch.Tensor
    guidance: Guidance
    nfe: int
    nfe_backward: int = 0
    seconds: float = 0.0
    #: The second latent of an exact-by-construction pair (EDICT's ``y_T``, BDIA's ``z_{N-1}``), else None.
    partner: torch.Tensor | None = None
    #: The method's own regeneration sampler, ``sampler(model, latents, grid, guidance, partner=,
    #: callback=, progress=)``; None: DDIM is the method's own sampler.
    sampler: Callable[..., torch.Tensor] | None = None


__all__ = ["InversionResult", "LATENT_KEYS", "Stop", "StepCallback", "StepInfo", "step_info"]
