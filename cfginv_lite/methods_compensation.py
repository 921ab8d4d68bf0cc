"""Registry entries for the compensation solvers and the baselines (issue #3).

Importing this module adds them to :data:`cfginv_lite.methods.METHODS`. Every entry has the
registry's calling convention ``fn(model, latents, grid, guidance, *, callback, progress,
**options) -> InversionResult``; ``options`` override the entry's settings (e.g.
``run_method("original", ..., refine_iterations=5)``). ``nfe``/``nfe_backward`` are per
image (the max over the batch where images stopped at different iterations).
"""
from __future__ import annotations

from typing import Any

import torch

from .baselines import invert_negative_prompt, invert_null_text
from .compensate import invert_anderson, invert_fixed_point, invert_original
from .ddim import Guidance, StepCallback
from .methods import InversionResult, register, solver_entry


# The seed's method: defaults (3 iterations), the author's showcase (5), and the
# "numerically correct" destination label instead of tless/t.
solver_entry("original", invert_original)
solver_entry("original-showcase", invert_original, refine_iterations=5)
solver_entry("original-no-tless", invert_original, tless_factor=None)
# Relatives: plain fixed point on every step (Meiri et al.), damped, and Anderson (AIDI).
solver_entry("fixed-point", invert_fixed_point, iterations=10, skip=0.0)
solver_entry("fixed-point-damped", invert_fixed_point, iterations=10, skip=0.0, damping=0.5)
solver_entry("anderson", invert_anderson, iterations=5, window=3, skip=0.0)


@register("negative-prompt")
def _negative_prompt(model: Any, latents: torch.Tensor, grid: list[int], guidance: Guidance, *,
                     callback: StepCallback | None = None, progress: bool = False, **options: Any) -> InversionResult:
    """``negative-prompt``: w = 1 inversion; regenerate with the prompt as negative prompt."""
    out = invert_negative_prompt(model, latents, grid, guidance, callback=callback, progress=progress, **options)
    return InversionResult(out.latents, out.guidance, out.nfe, out.nfe_backward)


@register("null-text")
def _null_text(model: Any, latents: torch.Tensor, grid: list[int], guidance: Guidance, *,
               callback: StepCallback | None = None, progress: bool = False, **options: Any) -> InversionResult:
    """``null-text``: pivot at w = 1, per-step null embeddings optimised with Adam (10 steps)."""
    out = invert_null_text(model, latents, grid, guidance, callback=callback, progress=progress, **options)
    return InversionResult(out.latents, out.guidance, out.nfe, out.nfe_backward)
