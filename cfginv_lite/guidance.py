"""Classifier-free guidance: prompt embeddings, the guidance scale, and the guided noise.

:class:`Guidance` holds what a solver needs to guide (conditional and unconditional
embeddings, the scale); :func:`guided_noise` evaluates both branches in **one** batched
network call and combines them with :func:`cfg_combine`, the one place the CFG formula is
written in the package.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .validation import as_prompt_list, check_real


@dataclass(frozen=True)
class Guidance:
    """Prompt embeddings and guidance scale for classifier-free guidance.

    ``cond`` and ``uncond`` are ``(B, L, D)``. ``uncond_per_step`` optionally replaces
    ``uncond`` at each *sampling* step (index 0 = noisiest step), which is how null-text
    inversion's optimised embeddings are used at regeneration; ``uncond_grid`` is the
    timestep grid they were optimised on (:func:`sample_ddim` refuses any other grid).
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    scale: float
    uncond_per_step: tuple[torch.Tensor, ...] | None = field(default=None)
    uncond_grid: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_guidance_scale(self.scale))  # numpy/tensor -> float
        if self.uncond_grid is not None and self.uncond_per_step is not None and (
                len(self.uncond_grid) != len(self.uncond_per_step) + 1):
            raise ValueError(f"{len(self.uncond_per_step)} per-step embeddings for a grid of "
                             f"{len(self.uncond_grid) - 1} steps")
        if self.cond.shape != self.uncond.shape:
            raise ValueError(
                f"conditional and unconditional embeddings differ in shape: "
                f"{tuple(self.cond.shape)} vs {tuple(self.uncond.shape)}"
            )

    def uncond_at(self, sampling_step: int | None) -> torch.Tensor:
        if self.uncond_per_step is None or sampling_step is None:
            return self.uncond
        return self.uncond_per_step[sampling_step]

    def with_scale(self, scale: float) -> "Guidance":
        return Guidance(self.cond, self.uncond, scale, self.uncond_per_step, self.uncond_grid)

    def check_grid(self, grid: Sequence[int]) -> None:
        """Per-step embeddings belong to one grid: refuse another (a shorter one would silently
        use the wrong steps' embeddings, a longer one run out of them)."""
        if self.uncond_per_step is None:
            return
        steps = len(grid) - 1
        if len(self.uncond_per_step) != steps or (self.uncond_grid is not None
                                                   and tuple(int(t) for t in grid) != self.uncond_grid):
            made_for = list(self.uncond_grid) if self.uncond_grid is not None else f"{len(self.uncond_per_step)} steps"
            raise ValueError(f"the per-step unconditional embeddings (null-text) were optimised for the grid "
                             f"{made_for}; they cannot be used on the grid {list(grid)} - regenerate on the "
                             "inversion grid")


def check_guidance_scale(scale: Any) -> float:
    """Guidance scale must be a finite, non-negative real number (a 1-element tensor is accepted)."""
    if isinstance(scale, torch.Tensor) and scale.numel() == 1 and scale.dtype != torch.bool:
        scale = scale.item()
    return check_real("guidance scale", scale, low=0.0)


def make_guidance(
    model: Any,
    prompts: Sequence[str] | str,
    scale: float,
    *,
    negative_prompts: Sequence[str] | str | None = None,
) -> Guidance:
    """Encode prompts and the unconditional (``""``, or a negative prompt) branch once."""
    scale = check_guidance_scale(scale)
    prompts = as_prompt_list(prompts)  # a plain string is one prompt, never one per character
    if negative_prompts is None:
        negative_prompts = [""] * len(prompts)
    elif isinstance(negative_prompts, str):
        negative_prompts = [negative_prompts] * len(prompts)
    else:
        negative_prompts = as_prompt_list(negative_prompts, "negative_prompts")
    if len(negative_prompts) != len(prompts):
        raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts")
    embeddings = model.encode_prompt([*negative_prompts, *prompts])
    uncond, cond = embeddings.chunk(2)
    return Guidance(cond=cond, uncond=uncond, scale=float(scale))


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance: ``eps_w = eps_u + w * (eps_c - eps_u)`` (Ho & Salimans 2022, eq. 6).

    The one place the combination is written: :func:`guided_noise`, the editing sampler and the
    baselines all call it. ``scale`` is a number or a tensor broadcastable against the noise.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


@dataclass
class NoiseEstimate:
    """Guided noise ``eps_w = eps_u + w (eps_c - eps_u)`` and its two branches."""

    guided: torch.Tensor
    uncond: torch.Tensor
    cond: torch.Tensor


def guided_noise(
    model: Any,
    latents: torch.Tensor,
    label_uncond: float | torch.Tensor,
    label_cond: float | torch.Tensor,
    guidance: Guidance,
    *,
    sampling_step: int | None = None,
) -> NoiseEstimate:
    """``eps_w(z; tu, tc) = eps(z, tu, "") + w * (eps(z, tc, prompt) - eps(z, tu, ""))``.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6). Both branches go through the
    network in **one** batched call, each with its own timestep label, because the
    ``tless`` method labels the unconditional branch differently from the conditional one.
    """
    check_guidance(guidance)
    batch = latents.shape[0]
    uncond = expand_batch(guidance.uncond_at(sampling_step), batch, "unconditional embeddings")
    cond = expand_batch(guidance.cond, batch, "conditional embeddings")
    labels = torch.cat([timestep_labels(label_uncond, batch, latents.device),
                        timestep_labels(label_cond, batch, latents.device)])
    eps = model.predict_noise(torch.cat([latents, latents]), labels, torch.cat([uncond, cond]))
    eps_u, eps_c = eps.chunk(2)
    return NoiseEstimate(guided=cfg_combine(eps_u, eps_c, guidance.scale), uncond=eps_u, cond=eps_c)


def timestep_labels(label: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """``(B,)`` float32 labels built on ``device``: no host-to-device copy per call."""
    if isinstance(label, torch.Tensor) and label.numel() == batch and label.ndim == 1:
        return label.to(device, torch.float32)
    return torch.full((batch,), float(label), dtype=torch.float32, device=device)


def expand_batch(emb: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Embeddings for ``batch`` latents: as given, or one embedding broadcast to all."""
    if emb.shape[0] == batch:
        return emb
    if emb.shape[0] == 1:
        return emb.expand(batch, *emb.shape[1:])
    raise ValueError(f"{what} have batch {emb.shape[0]}, latents have batch {batch}")


def check_guidance(guidance: Any) -> Guidance:
    """A solver's ``guidance`` must be a :class:`Guidance` (from :func:`make_guidance`), not a scale or prompts."""
    if not isinstance(guidance, Guidance):
        raise ValueError(f"guidance must be a cfginv_lite.Guidance (build it with make_guidance(model, prompts, "
                         f"scale)), got {type(guidance).__name__}")
    return guidance


__all__ = ["Guidance", "NoiseEstimate", "cfg_combine", "check_guidance", "check_guidance_scale", "guided_noise",
           "expand_batch", "make_guidance", "timestep_labels"]
