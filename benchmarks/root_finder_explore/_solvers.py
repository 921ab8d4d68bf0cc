"""The two solver names these exploration scripts were written with, as members of the one family.

Before issue 19 the package had ``invert_anderson`` and ``invert_focused``; both are now
:func:`cfginv_lite.fixed_point.invert_fixed_point` with ``window=3`` and a per-step budget. The
scripts keep their configuration tables readable with these two wrappers (same defaults as
the old functions; the focused one's ``warm_start`` default is False, as it was when they ran).
"""
from __future__ import annotations

from typing import Any

import torch

from cfginv_lite.fixed_point import HARD_LEVELS, budget_on_levels, invert_fixed_point


def invert_anderson(model: Any, latents: torch.Tensor, grid: Any, guidance: Any, *, iterations: int = 5,
                    window: int = 3, **options: Any) -> torch.Tensor:
    """Anderson with the same number of iterations on every step."""
    return invert_fixed_point(model, latents, grid, guidance, budget=iterations, window=window, **options)


def invert_focused(model: Any, latents: torch.Tensor, grid: Any, guidance: Any, *, iterations: int = 4,
                   levels: tuple[float, float] = HARD_LEVELS, other_iterations: int = 2, window: int = 3,
                   **options: Any) -> torch.Tensor:
    """Anderson with ``iterations`` on the steps whose destination lies in ``levels``, ``other_iterations`` elsewhere."""
    return invert_fixed_point(model, latents, grid, guidance, budget=budget_on_levels(iterations, levels,
                                                                                       other_iterations),
                              window=window, **options)
