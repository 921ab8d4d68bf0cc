"""Where along the noise levels does naive inversion go wrong?

For a *generated* image the true trajectory is known: the latents DDIM sampling visited.
That allows two exact per-step measurements:

* the **local error** of one naive inversion step started *on* the true trajectory,
  ``| move(z_t, eps_w(z_t; l, l), t -> t1) - z_t1 |`` (how much error each step adds);
* the **implicit-equation residual** ``| move(z_t1, eps_w(z_t1; t1, t1), t1 -> t) - z_t |``,
  zero for the true ``z_t1``: the equation compensated inversion solves and the naive step
  only approximates.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from tqdm.auto import tqdm

from .ddim import move, sample_ddim
from .guidance import Guidance, guided_noise


def sampling_trajectory(model: Any, noise: torch.Tensor, grid: Sequence[int], guidance: Guidance, *,
                        progress: bool = False) -> torch.Tensor:
    """Latents DDIM visits, **ascending** in level: shape ``(steps + 1, B, C, H, W)``; ``[-1]`` is the noise.

    ``progress=True`` shows a ``tqdm.auto`` bar over the sampling steps.
    """
    visited = [noise]
    sample_ddim(model, noise, grid, guidance, callback=lambda d: visited.append(d["latent"]), progress=progress)
    return torch.stack(visited[::-1])


def _all_steps_noise(model: Any, latents: torch.Tensor, labels: Sequence[float], guidance: Guidance,
                     max_batch: int = 1024, progress: bool = False) -> torch.Tensor:
    """Guided noise for every (step, image) pair, several steps per batched network call.

    At most ``max_batch`` pairs go into one call: the cost per pair is the same beyond a few
    dozen, and it bounds the memory (100 images x 51 levels in one call needed over 1 GB).
    """
    steps, batch = latents.shape[:2]
    per_call = max(1, max_batch // batch)
    out = []
    with torch.no_grad():
        for first in tqdm(range(0, steps, per_call), desc="noise at every level", disable=not progress, leave=False):
            chunk = latents[first:first + per_call]
            n = chunk.shape[0]
            flat = chunk.reshape(n * batch, *latents.shape[2:])
            lab = torch.tensor([float(l) for l in labels[first:first + n] for _ in range(batch)], device=latents.device)
            tiled = Guidance(guidance.cond.repeat(n, 1, 1), guidance.uncond.repeat(n, 1, 1), guidance.scale)
            out.append(guided_noise(model, flat, lab, lab, tiled).guided.reshape(chunk.shape))
    return torch.cat(out)


def local_inversion_errors(model: Any, trajectory: torch.Tensor, grid: Sequence[int], guidance: Guidance,
                           label: Literal["source", "destination"] = "source") -> torch.Tensor:
    """Per-step RMSE, ``(steps, B)``, of one naive inversion step started on the true trajectory."""
    grid = list(grid)
    abar = model.alphas_cumprod
    labels = grid[:-1] if label == "source" else grid[1:]
    eps = _all_steps_noise(model, trajectory[:-1], labels, guidance)
    errors = []
    for i in range(len(grid) - 1):
        pred = move(trajectory[i], eps[i], float(abar[grid[i]]), float(abar[grid[i + 1]]))
        errors.append((pred - trajectory[i + 1]).flatten(1).pow(2).mean(1).sqrt())
    return torch.stack(errors)


def implicit_residuals(model: Any, lower: torch.Tensor, upper: torch.Tensor, grid: Sequence[int],
                       guidance: Guidance) -> torch.Tensor:
    """Per-step RMSE ``(steps, B)`` of ``move(upper_i, eps_w(upper_i; t1), t1 -> t) - lower_i``.

    ``lower[i]`` sits at ``grid[i]`` and ``upper[i]`` at ``grid[i+1]``. For the true
    trajectory (``lower = traj[:-1]``, ``upper = traj[1:]``) it is zero up to float error;
    for a naive inversion's iterates it measures how far each step is from solving it.
    """
    grid = list(grid)
    abar = model.alphas_cumprod
    eps = _all_steps_noise(model, upper, grid[1:], guidance)
    out = []
    for i in range(len(grid) - 1):
        back = move(upper[i], eps[i], float(abar[grid[i + 1]]), float(abar[grid[i]]))
        out.append((back - lower[i]).flatten(1).pow(2).mean(1).sqrt())
    return torch.stack(out)


def noise_change_between_levels(model: Any, trajectory: torch.Tensor, grid: Sequence[int],
                                guidance: Guidance, *, progress: bool = False) -> torch.Tensor:
    """Relative change ``|eps_w(z_t1; t1) - eps_w(z_t; t)| / |eps_w(z_t; t)|`` per step, ``(steps, B)``.

    Naive inversion replaces the first by the second; it is exact when this is zero.
    ``progress=True`` shows a ``tqdm.auto`` bar over the batched network calls.
    """
    eps = _all_steps_noise(model, trajectory, list(grid), guidance, progress=progress)
    diff = (eps[1:] - eps[:-1]).flatten(2).norm(dim=2)
    return diff / eps[:-1].flatten(2).norm(dim=2).clamp_min(1e-12)
