"""Which inversion steps cause the final error? Make one step exact, or all but one.

Naive inversion makes an error at every step; what matters is how much of the *final*
image error each step causes, which is not the error it adds locally (a step's error is
amplified or damped by the steps after it). Two controlled experiments answer it:

* **only step i exact**: every step naive except step ``i``, whose implicit equation
  ``move(x, eps_w(x; t1, t1), t1 -> t) = z_t`` is solved
  (8 Anderson iterations; notebook 03c measures how closely); the gain over all-naive is
  what fixing step ``i`` alone buys.
* **all exact but step i**: every step solved except step ``i``, which is naive; the error
  left is what step ``i``'s approximation alone causes.

The second experiment is cheap thanks to an identity: an exactly inverted step is undone
exactly by the sampling step that regeneration takes, so everything above step ``i``
cancels in the round trip. Regenerating from the top then equals sampling down from level
``t_{i+1}``, starting at the naive step's result ``x_{i+1} = naive(z_i)``, where ``z_i`` is
the all-exact inversion's latent at level ``t_i``. :func:`all_exact_but` uses that shortcut;
``shortcut=False`` runs the long way (solve every step above too, regenerate from the top)
so a notebook can check that both agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .fixed_point import invert_fixed_point
from .ddim import invert_naive, sample_ddim
from .guidance import Guidance
from .validation import check_grid

#: Solver settings for "exact": Anderson acceleration on the destination-label equation.
EXACT_OPTIONS: dict[str, Any] = dict(budget=8, window=3)


def _solve(model: Any, z: torch.Tensor, grid: Sequence[int], guidance: Guidance) -> torch.Tensor:
    return invert_fixed_point(model, z, list(grid), guidance, progress=False, **EXACT_OPTIONS)


def _naive(model: Any, z: torch.Tensor, grid: Sequence[int], guidance: Guidance, label: str) -> torch.Tensor:
    return invert_naive(model, z, list(grid), guidance, label=label, progress=False)


@dataclass
class Trajectory:
    """Latents at every level of an inversion, ``levels[k]`` at ``grid[k]`` (``levels[0]`` = input)."""

    grid: list[int]
    levels: list[torch.Tensor]


def trajectory(model: Any, latents: torch.Tensor, grid: Sequence[int], guidance: Guidance, *,
               exact: bool, label: str = "source", progress: bool = False) -> Trajectory:
    """Naive (``label`` convention) or exact inversion, keeping the latent at every level."""
    grid = check_grid(grid, len(model.alphas_cumprod))
    levels = [latents]
    keep = lambda info: levels.append(info["latent"])  # noqa: E731  (one line: keep the latents)
    if exact:
        invert_fixed_point(model, latents, grid, guidance, progress=progress, callback=keep, **EXACT_OPTIONS)
    else:
        invert_naive(model, latents, grid, guidance, label=label, progress=progress, callback=keep)
    return Trajectory(grid, levels)


def only_step_exact(model: Any, naive: Trajectory, i: int, guidance: Guidance, *,
                    label: str = "source") -> torch.Tensor:
    """Clean latent regenerated after an inversion that is naive except at step ``i`` (solved).

    Reuses the naive trajectory below step ``i``; the steps above are naive again.
    """
    grid = naive.grid
    x = _solve(model, naive.levels[i], grid[i:i + 2], guidance)
    if i + 1 < len(grid) - 1:
        x = _naive(model, x, grid[i + 1:], guidance, label)
    return sample_ddim(model, x, grid, guidance, progress=False)


def all_exact_but(model: Any, exact: Trajectory, i: int, guidance: Guidance, *, label: str = "source",
                  shortcut: bool = True) -> torch.Tensor:
    """Clean latent regenerated after an inversion that is exact except at step ``i`` (naive).

    With ``shortcut`` (see the module docstring) the steps above ``i`` are not solved: the
    naive step's result is sampled down from level ``grid[i + 1]``.
    """
    grid = exact.grid
    x = _naive(model, exact.levels[i], grid[i:i + 2], guidance, label)
    if shortcut:
        return sample_ddim(model, x, grid[:i + 2], guidance, progress=False)
    if i + 1 < len(grid) - 1:
        x = _solve(model, x, grid[i + 1:], guidance)
    return sample_ddim(model, x, grid, guidance, progress=False)
