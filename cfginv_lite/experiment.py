"""Generate -> invert -> regenerate: the experiment every notebook and the CLI repeat.

Kept here, not in the notebooks, so that a notebook cell reads as the idea
(``generate``, ``reconstruct``) and the bookkeeping (seeds, metrics, timing) is shared.
:func:`generate` and :func:`seeded_noise` live in :mod:`cfginv_lite.sampling`, below
:mod:`cfginv_lite.evidence`, whose pipeline :func:`reconstruct_samplers` runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .data import digit_prompt
from .records import StepCallback
from .evidence import InputSet, evaluate_samplers
from .validation import as_prompt_list, check_int


def digit_prompts(images_per_digit: int = 1, digits: Sequence[int] = range(10)) -> tuple[list[str], list[int]]:
    """Prompts ``"a handwritten digit <name>"``, ``images_per_digit`` of each requested digit."""
    images_per_digit = check_int("images_per_digit", images_per_digit, 1)   # 2.5, True, "3": a clear error
    digits = list(digits)
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= 9 for d in digits):
        raise ValueError(f"digits must be whole numbers from 0 to 9, got {digits}")
    labels = [int(d) for d in digits for _ in range(images_per_digit)]
    return [digit_prompt(d) for d in labels], labels


@dataclass
class Reconstruction:
    """One method's inversion and regeneration of a batch, with its cost and errors."""

    method: str
    scale: float
    steps: int
    nfe: int
    nfe_backward: int
    seconds: float
    inverted: torch.Tensor                 # the recovered starting noise
    regenerated: torch.Tensor              # decoded regeneration, [-1, 1]
    image_rmse: torch.Tensor               # per image, [0, 1] pixel units
    psnr: torch.Tensor                     # per image, dB
    latent_rmse: torch.Tensor | None       # per image, to the true noise (generated images only)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Batch means as plain floats, for tables."""
        return {
            "method": self.method, "cfg": self.scale, "steps": self.steps, "nfe": self.nfe,
            "nfe_backward": self.nfe_backward, "seconds": self.seconds,
            "image_rmse": float(self.image_rmse.mean()), "psnr": float(self.psnr.mean()),
            "latent_rmse": None if self.latent_rmse is None else float(self.latent_rmse.mean()),
            **{k: v for k, v in self.extra.items() if isinstance(v, (int, float, str, bool))},
        }


def reconstruct(model: Any, images: torch.Tensor, prompts: Sequence[str], scale: float, grid: Sequence[int], *,
                method: str = "naive", true_noise: torch.Tensor | None = None, sampler: str = "ddim",
                callback: StepCallback | None = None, regen_callback: StepCallback | None = None,
                progress: bool = False, **options: Any) -> Reconstruction:
    """Encode ``images``, invert them with ``method`` at ``scale``, regenerate, and measure.

    ``sampler="ddim"`` regenerates with DDIM on the inversion grid; ``"lms"`` with K-LMS as
    the original notebook did (:func:`cfginv_lite.sampling.sample_lms`).
    """
    return reconstruct_samplers(model, images, prompts, scale, grid, method=method, true_noise=true_noise,
                                samplers=(sampler,), callback=callback, regen_callback=regen_callback,
                                progress=progress, **options)[sampler]


def reconstruct_samplers(model: Any, images: torch.Tensor, prompts: Sequence[str], scale: float,
                         grid: Sequence[int], *, method: str = "naive", true_noise: torch.Tensor | None = None,
                         samplers: Sequence[str] = ("ddim", "lms"), callback: StepCallback | None = None,
                         regen_callback: StepCallback | None = None, progress: bool = False,
                         **options: Any) -> dict[str, Reconstruction]:
    """Like :func:`reconstruct`, but invert **once** and regenerate with each of ``samplers``.

    The encoded ``images`` go through the course's one invert -> regenerate -> measure pipeline,
    :func:`cfginv_lite.evidence.evaluate_samplers`; one prompt is used for every image.
    """
    prompts = as_prompt_list(prompts)                  # a string is one prompt
    batch = images.shape[0] if isinstance(images, torch.Tensor) and images.ndim == 4 else None
    if batch is not None and len(prompts) == 1 and batch > 1:
        prompts = prompts * batch
    inputs = InputSet("images", model.encode(images), images, prompts, [], true_noise)
    by_sampler = evaluate_samplers(model, [inputs], scale, grid, method, samplers=samplers, callback=callback,
                                   regen_callback=regen_callback, progress=progress, **options)
    out = {}
    for sampler, results in by_sampler.items():
        r = results["images"]
        out[sampler] = Reconstruction(
            method=method, scale=r.scale, steps=r.steps, nfe=r.nfe, nfe_backward=r.nfe_backward, seconds=r.seconds,
            inverted=r.inverted, regenerated=r.regenerated, image_rmse=torch.from_numpy(r.image_rmse),
            psnr=torch.from_numpy(r.psnr), latent_rmse=None if r.latent_rmse is None else torch.from_numpy(r.latent_rmse),
            extra={"sampler": sampler},
        )
    return out
