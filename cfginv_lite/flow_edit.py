"""FlowEdit: inversion-free text-based editing with a flow model, as one solver loop.

Kulikov et al. 2024, "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models",
arXiv:2412.08629, Alg. 1 (github.com/fallenshock/FlowEdit). Start from the source image
``z_FE = x_src`` (at ``t = 0``). Down the grid from ``times[-1 - skip]`` to 0, per step draw fresh noise
``n``, form the noisy source ``z_src = (1 - t) x_src + t n`` and the coupled target
``z_tar = z_FE + z_src - x_src``, and move ``z_FE`` by the difference of the two guided velocities::

    z_FE <- z_FE + (t_prev - t) * (v_w_tar(z_tar, t, c_tar) - v_w_src(z_src, t, c_src))

(averaged over ``n_avg`` noise draws). No inversion: the output is an ODE between the two prompts'
velocity fields. The noise is random, so results vary with ``seed`` (the paper's ``n_avg`` trades
compute for that variance). ``skip = n_max`` complement: the paper's ``n_max`` is ``steps - skip``.
Each step costs ``2 n_avg`` guided evaluations (source and target in one batched call each).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .flow import branch_nfe, check_flow_grid, check_flow_model, guided_velocity, report_flow_step
from .guidance import Guidance, check_guidance
from .records import StepCallback
from .validation import FiniteGuard, check_int, check_latents, check_seed


@torch.no_grad()
def flow_edit(model: Any, latents: torch.Tensor, times: Sequence[float], source: Guidance, target: Guidance, *,
              skip: int = 0, n_avg: int = 1, seed: int = 0, callback: StepCallback | None = None,
              progress: bool = True) -> torch.Tensor:
    """FlowEdit (Kulikov et al. 2024, Alg. 1) from clean source latents; returns the edited latents at ``times[0]``."""
    check_flow_model(model)
    x_src = check_latents(model, latents)
    check_guidance(source), check_guidance(target)
    grid = check_flow_grid(times)
    skip = check_int("skip", skip, minimum=0, maximum=len(grid) - 2)
    n_avg = check_int("n_avg", n_avg, minimum=1, maximum=64)
    gen = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    pairs = [(grid[i + 1], grid[i]) for i in reversed(range(len(grid) - 1 - skip))]   # (t, t_prev), descending
    z, nfe, per = x_src, 0, branch_nfe(model)
    guard = FiniteGuard(z.device)
    for i, (t, t_prev) in enumerate(tqdm(pairs, desc="flow_edit", disable=not progress, leave=False)):
        delta = torch.zeros_like(z)
        for _ in range(n_avg):
            noise = torch.randn(x_src.shape, generator=gen).to(x_src.device, x_src.dtype)
            z_src = (1 - t) * x_src + t * noise
            z_tar = z + z_src - x_src
            delta = delta + guided_velocity(model, z_tar, t, target) - guided_velocity(model, z_src, t, source)
            nfe += 2 * per
        z_next = z + (t_prev - t) * delta / n_avg
        guard.update(i, z_next)
        report_flow_step(callback, i, len(pairs), t, t_prev, z, z_next, delta / n_avg, nfe)
        z = z_next
    guard.raise_if_bad("flow_edit", grid, -1)
    return z


__all__ = ["flow_edit"]
