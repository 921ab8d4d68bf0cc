"""The model protocol every solver in :mod:`cfginv_lite` is written against.

The embedded digits and mini-sd models and Stable Diffusion all implement it, so a notebook
switches between them with one setting and no solver changes.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class DiffusionModel(Protocol):
    """What a solver needs from a latent diffusion model.

    Attributes
    ----------
    name:
        Short human name ("digits", "mini-sd", "stable-diffusion").
    latent_shape:
        ``(C, H, W)`` of one latent: ``(1, 8, 8)`` for the shipped digits model (its 8x8 images are
        their own latents), ``(4, 8, 8)`` for mini-sd (32x32 images), ``(4, H/8, W/8)`` for
        Stable Diffusion (``(4, 64, 64)`` at 512 px).
    scheduler_config:
        A diffusers scheduler config (dict) from which the schedule is built.
    alphas_cumprod:
        ``abar_t`` for ``t = 0 .. T-1``, float64 on CPU, built from ``scheduler_config``.
    device, dtype:
        Where and in which precision the network runs.
    """

    name: str
    latent_shape: tuple[int, int, int]
    scheduler_config: Mapping[str, Any]
    alphas_cumprod: torch.Tensor
    device: torch.device
    dtype: torch.dtype

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in ``[-1, 1]``, shape ``(B, 3|1, H, W)`` -> latents ``(B, *latent_shape)``."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in ``[-1, 1]``."""

    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> text embeddings ``(B, L, D)`` for cross-attention; ``""`` is unconditional."""

    def predict_noise(self, latents: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Noise estimate ``eps(z, t, c)`` (epsilon parameterisation, v converted).

        ``labels`` is a float tensor ``(B,)`` of timestep labels, fractional ones allowed
        (the ``tless`` offset needs them). One call is one batched network evaluation.
        """
