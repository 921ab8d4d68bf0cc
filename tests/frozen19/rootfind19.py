"""FROZEN copy of cfginv_lite/rootfind.py at commit fac9175 (before issue 19). Do not edit."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from compensate19 import _all_stopped, _anderson_mix, _check_fixed_point, _report, _Search, _where
from ddim19 import FiniteGuard, Guidance, StepCallback, check_grid, check_latents, guided_noise, move
from cfginv_lite.validation import check_int, check_positive, check_real

#: The noisy levels notebook 03c's attribution (every other step solved) singles out, as (low, high) destination levels.
NOISY_LEVELS = (700, 950)
#: The levels where the per-step equation is hardest on real digits (the default of :func:`invert_focused`).
HARD_LEVELS = (0, 349)


def _check_levels(levels: Any) -> tuple[float, float]:
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__len__") or len(levels) != 2:
        raise ValueError(f"levels must be a (low, high) pair of noise levels, got {levels!r}")
    low, high = (check_real("levels", v) for v in levels)
    if low > high:
        raise ValueError(f"levels must be (low, high) with low <= high, got {levels!r}")
    return low, high


def invert_focused(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    iterations: int = 4,
    levels: tuple[float, float] = HARD_LEVELS,
    other_iterations: int = 2,
    warm_start: bool = False,
    window: int = 3,
    damping: float = 1.0,
    ridge: float = 1e-8,
    tol: float | None = None,
    divergence_factor: float | None = 2.0,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Anderson-accelerated DDIM inversion with a per-step budget and warm starts.

    Per step ``t -> t1`` (equation and map as :func:`~cfginv_lite.compensate.invert_anderson`:
    ``G(x) = move(z, eps_w(x; t1, t1), t -> t1)``, fixed point ``move(x, eps_w(x), t1 -> t) = z``):

    1. naive step with the destination label, ``n_i = G(z)`` (2 NFE);
    2. on a step that iterates, first iterate ``x_0 = n_i + c`` with ``c = z_i - n_{i-1}``, the
       correction the previous step made to its own naive step (``warm_start``; 0 on the first
       step); a step without iterations returns its naive step;
    3. ``iterations`` Anderson iterations (2 NFE each) if the destination level ``t1`` lies in
       ``levels`` (inclusive), else ``other_iterations``; ``tol`` stops an image early.

    Defaults: 4 iterations on the 7 steps up to level 349 of a 20-step grid, 2 on the other 13:
    40 + 56 + 52 = 148 NFE per image.
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    iterations, damping, _, _, tol, divergence_factor, _ = _check_fixed_point(
        iterations, damping, None, 0.0, tol, divergence_factor, "destination")
    other_iterations = check_int("other_iterations", other_iterations, 0)
    low, high = _check_levels(levels)
    window, ridge = check_int("window", window, 1), check_positive("ridge", ridge, allow_zero=True)
    if not isinstance(warm_start, bool):
        raise ValueError(f"warm_start must be True or False, got {warm_start!r}")
    abar, steps, batch, dev = model.alphas_cumprod, len(grid) - 1, z.shape[0], z.device
    guard, nfe = FiniteGuard(dev), torch.zeros(batch, dtype=torch.long, device=dev)
    correction = torch.zeros_like(z)
    for i in tqdm(range(steps), desc="invert_focused", disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        a_t, a_t1 = float(abar[t]), float(abar[t1])
        noise = guided_noise(model, z, t1, t1, guidance).guided          # 1. naive step (destination)
        naive = move(z, noise, a_t, a_t1)
        n = iterations if low <= t1 <= high else other_iterations        # 3. the step's budget
        x = naive + correction if warm_start and n else naive            # 2. warm start (refined steps only)
        search = _Search(x, n)
        hist_x = hist_g = x.flatten(1)[:, None].repeat(1, window + 1, 1)
        count = torch.zeros(batch, dtype=torch.long, device=dev)
        for _ in range(n):
            if _all_stopped(search.active):
                break
            e = guided_noise(model, x, t1, t1, guidance).guided
            g = move(z, e, a_t, a_t1)                                    # G(x)
            r = (z - move(x, e, a_t1, a_t)).abs().flatten(1).mean(1).double()
            noise = _where(search.active, e, noise)
            go, grew = search.update(x, r, g, tol, divergence_factor)
            count = torch.where(go, torch.where(grew, 1, (count + 1).clamp(max=window + 1)), count)
            hist_x = _where(go, torch.cat([hist_x[:, 1:], x.flatten(1)[:, None]], 1), hist_x)
            hist_g = _where(go, torch.cat([hist_g[:, 1:], g.flatten(1)[:, None]], 1), hist_g)
            cand, ok = _anderson_mix(hist_x, hist_g, count, damping, ridge)
            x = _where(go, _where(ok, cand.view_as(x).to(x.dtype), x + damping * (g - x)), x)
        z_next, residual = search.result(x, [])
        nfe += 2 + 2 * search.evals
        guard.update(i, z_next)
        if callback is not None:
            labels = (float(t1), float(t1))
            _report(callback, i, steps, t, t1, labels, z_next, z, noise, nfe, residual, search.rows,
                    search.evals, search.stopped)
        correction = z_next - naive
        z = z_next
    guard.raise_if_bad("invert_focused", grid, +1)
    return z


__all__ = ["HARD_LEVELS", "NOISY_LEVELS", "invert_focused"]
