"""Fixed-point DDIM inversion, one family: plain, damped, Anderson-accelerated, per-step budgets.

Exact DDIM inversion wants, per step ``t -> t1``, the ``z1`` whose own sampling step lands
back on the known latent ``z``::

    F(z1) := move(z1, eps_w(z1; t1, t1), t1 -> t) = z            (implicit equation)

:func:`invert_fixed_point` iterates the "inverse" form of public code (dvirsamuel/FPI,
ReNoise), ``G(x) = move(z, eps_w(x; t1, t1), t -> t1)``, whose fixed points solve it:

* ``window=0``: ``x <- x + damping * (G(x) - x)`` (plain fixed point, Meiri et al. 2023, for
  ``damping=1``; damped below 1; Hong et al.'s CVPR 2024 ``z -= step * (forward(z) - target)``
  is the same iteration in residual form), optionally averaging the last map values (ReNoise,
  Garibi et al. 2024);
* ``window=m``: Anderson acceleration over the last ``m`` differences (AIDI: Pan et al.,
  ICCV 2023; ``m = 3`` with 5 iterations is the setting of the public re-implementation
  wmchen/diffusion-inversion, not one taken from the paper);
* ``budget``: iterations per step, the same on every step or chosen per step, e.g. more
  where the equation is hard (:func:`budget_on_levels`; ``docs/root_finder_target.md``
  measured where) or none on the first steps (:func:`budget_after_fraction`);
* ``warm_start``: a refined step's first iterate is its naive step plus the correction the
  previous step made to its own naive step.

The seed's method (:func:`cfginv_lite.compensate.invert_original`) is a damped fixed-point
iteration too, in residual form, and keeps its own loop with its quirks.

Residuals are the **mean absolute value per element** of ``z - F(x)`` (one number per image),
so they mean the same on a 1x8x8 digits latent as on a 4x64x64 Stable Diffusion latent.
Batches: every iteration is **one** guided call on the whole batch, whose shape never
changes; per-image bookkeeping (best iterate, stop) lives in ``(B,)`` tensors on the
latents' device, applied with ``torch.where`` (:func:`where_image`). Nothing is copied to the
host inside the loop; on the CPU, where asking costs nothing, a step ends as soon as every
image has stopped (:func:`all_stopped`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal, Sequence, Union

import torch
from tqdm.auto import tqdm

from .ddim import move
from .guidance import Guidance, guided_noise
from .records import StepCallback, Stop, step_info
from .validation import (FiniteGuard, check_choice, check_fraction, check_grid, check_int, check_latents,
                         check_optional_real, check_positive, check_real)

InitLabel = Literal["source", "destination"]
#: Iterations per step: one count for every step, one per step, or a function of the grid.
Budget = Union[int, Sequence[int], Callable[[Sequence[int]], Sequence[int]]]
#: The levels where the per-step equation is hardest on real digits (``docs/root_finder_target.md``).
HARD_LEVELS = (0, 349)
#: The noisy levels notebook 03c's attribution (every other step solved) singles out.
NOISY_LEVELS = (700, 950)


# --------------------------------------------------------------------------- per-image masks
def where_image(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where`` with a per-image ``(B,)`` mask broadcast over latents ``(B, ...)``."""
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


def all_stopped(active: torch.Tensor) -> bool:
    """True when no image is still iterating, asked only where asking is free (no GPU queue)."""
    return active.device.type == "cpu" and not bool(active.any())


# --------------------------------------------------------------------------- budgets
def budget_on_levels(inside: int, levels: tuple[float, float] = HARD_LEVELS,
                     outside: int = 0) -> Callable[[Sequence[int]], list[int]]:
    """A budget of ``inside`` iterations on the steps whose destination level lies in ``levels``
    (inclusive), ``outside`` on the others. ``budget_on_levels(4, (0, 349), 2)`` on a 20-step grid:
    4 iterations on 7 steps, 2 on 13 (148 NFE per image with the naive steps)."""
    inside, outside = check_int("inside", inside, 0), check_int("outside", outside, 0)
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__len__") or len(levels) != 2:
        raise ValueError(f"levels must be a (low, high) pair of noise levels, got {levels!r}")
    low, high = (check_real("levels", v) for v in levels)
    if low > high:
        raise ValueError(f"levels must be (low, high) with low <= high, got {levels!r}")
    return lambda grid: [inside if low <= t1 <= high else outside for t1 in grid[1:]]


def budget_after_fraction(iterations: int, skip: float) -> Callable[[Sequence[int]], list[int]]:
    """``iterations`` on the steps ``i >= steps * skip``, none before (``skip=0.7``: the noisiest 30%)."""
    iterations, skip = check_int("iterations", iterations, 0), check_fraction("skip", skip)
    return lambda grid: [iterations if i >= (len(grid) - 1) * skip else 0 for i in range(len(grid) - 1)]


def per_step_budget(budget: Any, grid: Sequence[Any]) -> list[int]:
    """Iterations on each of the ``len(grid) - 1`` steps of ``grid`` from a :data:`Budget` (checked)."""
    steps = len(grid) - 1
    if callable(budget):
        budget = budget(grid)
    if isinstance(budget, (str, bytes)) or not (hasattr(budget, "__len__") or isinstance(budget, int) or
                                                hasattr(budget, "__index__")):
        raise ValueError(f"budget must be an iteration count, one per step, or a function of the grid; got {budget!r}")
    if not hasattr(budget, "__len__"):
        return [check_int("budget", budget, 0)] * steps
    if len(budget) != steps:
        raise ValueError(f"budget has {len(budget)} entries for a grid of {steps} steps")
    return [check_int("budget", n, 0) for n in budget]


# --------------------------------------------------------------------------- one step's search
class FixedPointSearch:
    """Per-image keep-best and stopping of one step's fixed-point search, as ``(B,)`` device tensors.

    Shared by :func:`invert_fixed_point` and the flow twin
    (:func:`cfginv_lite.flow_fixed_point.invert_flow_fixed_point`): any map ``G`` whose fixed
    point is sought, with the residual of an iterate given by the caller.

    Iteration ``k`` evaluates iterate ``x_k`` (``x_0``: the naive step). An image stops at
    ``residual < tol`` (``THRESHOLD``) or on divergence (non-finite, or residual ``>
    divergence_factor x`` its best: ``DIVERGED``) and keeps its best evaluated iterate.
    """

    def __init__(self, x0: torch.Tensor, iterations: int) -> None:
        batch, dev = x0.shape[0], x0.device
        self.x0, self.best = x0, x0
        self.best_r = torch.full((batch,), math.inf, dtype=torch.float64, device=dev)
        self.last_r = torch.full((batch,), math.nan, dtype=torch.float64, device=dev)
        self.evals = torch.zeros(batch, dtype=torch.long, device=dev)
        self.active = torch.full((batch,), iterations > 0, dtype=torch.bool, device=dev)
        self.stopped = torch.full((batch,), Stop.MAX_ITER if iterations > 0 else Stop.SKIPPED, device=dev)
        self.rows: list[torch.Tensor] = []

    def update(self, x: torch.Tensor, r: torch.Tensor, g: torch.Tensor, tol: float | None,
               divergence_factor: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Record residuals ``r`` of iterates ``x`` (map values ``g``); return ``(go, grew)``:
        the images that take a new step, and those whose residual grew since the last one."""
        active = self.active
        self.rows.append(torch.where(active, r, math.nan))
        self.evals += active
        finite = torch.isfinite(r) & torch.isfinite(g).flatten(1).all(1)
        improved = active & finite & (r < self.best_r)
        self.best = where_image(improved, x, self.best)
        self.best_r = torch.where(improved, r, self.best_r)
        diverged = ~finite if divergence_factor is None else ~finite | (r > divergence_factor * self.best_r)
        converged = ~diverged & (r < tol) if tol is not None else torch.zeros_like(diverged)
        grew = r > self.last_r  # False on the first evaluation (NaN)
        self.last_r = torch.where(active, r, self.last_r)
        self.stopped = torch.where(active & diverged, Stop.DIVERGED,
                                   torch.where(active & converged, Stop.THRESHOLD, self.stopped))
        self.active = active & ~diverged & ~converged
        return self.active, grew

    def residual_rows(self) -> torch.Tensor:
        """``(K, B)`` residual of the iterate evaluated at each iteration run, NaN where an image had stopped."""
        return torch.stack(self.rows) if self.rows else self.best_r.new_empty(0, self.best_r.shape[0])

    def result(self, x: torch.Tensor, recent: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returned latent and its residual (NaN: never evaluated). An image that ran every
        iteration returns the new, unevaluated ``x_n`` if its last evaluated iterate was its best
        (a slowly diverging run must not win), or the mean of the ``recent`` map values."""
        done = (self.stopped == Stop.MAX_ITER) & (self.evals > 0)
        further = done if recent else done & (self.last_r <= self.best_r)
        ahead = torch.stack(recent).mean(0) if recent else x
        residual = torch.where(further | (self.evals == 0), math.nan, self.best_r)
        return where_image(further, ahead, where_image(self.evals > 0, self.best, self.x0)), residual


def anderson_mix(hist_x: torch.Tensor, hist_g: torch.Tensor, count: torch.Tensor, damping: float,
                  ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Anderson (type II) candidates for a batch, and where they are usable.

    ``hist_x``/``hist_g``: ``(B, m+1, N)`` iterates and map values, oldest first, of which the
    last ``count`` per image are valid. With ``f = G(x) - x`` and ``dF``/``dX`` the successive
    differences of the valid window: ``gamma = argmin |f_k - dF gamma|^2 + lam |gamma|^2``
    (ridge-regularised normal equations in float64, ``lam = ridge * mean diag(dF dF^T)``),
    then ``x_{k+1} = x_k + beta f_k - (dX + beta dF) gamma`` (Walker & Ni 2011, eq. 2.3).
    Invalid differences are zero rows with a unit diagonal, so ``gamma`` is 0 there. A
    candidate is unusable with fewer than 2 entries, a singular system, or non-finite values.
    """
    x, g = hist_x.double(), hist_g.double()
    f = g - x
    valid = torch.arange(1, x.shape[1], device=x.device) >= x.shape[1] - count.clamp(min=1)[:, None] + 1
    d_f = torch.where(valid[..., None], f[:, 1:] - f[:, :-1], 0.0)
    d_x = torch.where(valid[..., None], x[:, 1:] - x[:, :-1], 0.0)
    gram = d_f @ d_f.transpose(1, 2)
    m = valid.sum(1).clamp(min=1)
    lam = ridge * (gram.diagonal(dim1=1, dim2=2).sum(1) / m + 1e-30)
    eye = torch.diag_embed(torch.where(valid, lam[:, None], 1.0))
    gamma, info = torch.linalg.solve_ex(gram + eye, (d_f @ f[:, -1:].transpose(1, 2)))
    cand = x[:, -1] + damping * f[:, -1] - ((d_x + damping * d_f).transpose(1, 2) @ gamma)[..., 0]
    return cand, (count > 1) & (info == 0) & torch.isfinite(cand).all(1)


class AndersonHistory:
    """The last ``window + 1`` iterates and map values of each image, and the next iterate
    (shared by the DDIM and flow fixed points).

    ``window=0``: no history, the damped step ``x + damping * (G(x) - x)``. Otherwise Anderson
    mixing (:func:`anderson_mix`), falling back to the damped step where the solve fails, with
    an image's history restarted whenever its residual grew since its previous iterate.
    """

    def __init__(self, x: torch.Tensor, window: int, damping: float, ridge: float) -> None:
        self.window, self.damping, self.ridge = window, damping, ridge
        if window:
            self.x = self.g = x.flatten(1)[:, None].repeat(1, window + 1, 1)  # (B, m+1, N), oldest first
            self.count = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # valid entries

    def next(self, x: torch.Tensor, g: torch.Tensor, go: torch.Tensor, grew: torch.Tensor) -> torch.Tensor:
        plain = x + self.damping * (g - x)
        if not self.window:
            return where_image(go, plain, x)
        self.count = torch.where(go, torch.where(grew, 1, (self.count + 1).clamp(max=self.window + 1)), self.count)
        self.x = where_image(go, torch.cat([self.x[:, 1:], x.flatten(1)[:, None]], 1), self.x)
        self.g = where_image(go, torch.cat([self.g[:, 1:], g.flatten(1)[:, None]], 1), self.g)
        cand, ok = anderson_mix(self.x, self.g, self.count, self.damping, self.ridge)
        return where_image(go, where_image(ok, cand.view_as(x).to(x.dtype), plain), x)


def check_fixed_point_options(iterations_max: int, window: Any, damping: Any, ridge: Any, average_last: Any,
                              tol: Any, divergence_factor: Any, init_label: Any, warm_start: Any) -> tuple:
    """The fixed-point options as Python numbers (numpy scalars accepted), in :func:`invert_fixed_point`'s order."""
    if average_last is not None and check_int("average_last", average_last, 1) > max(iterations_max, 1):
        raise ValueError(f"average_last={average_last} exceeds the budget's most iterations per step, {iterations_max}")
    if not isinstance(warm_start, bool):
        raise ValueError(f"warm_start must be True or False, got {warm_start!r}")
    return (check_int("window", window, 0), check_positive("damping", damping, high=2.0),
            check_positive("ridge", ridge, allow_zero=True), None if average_last is None else int(average_last),
            check_optional_real("tol", tol, low=0.0),
            check_optional_real("divergence_factor", divergence_factor, low=1.0, low_open=True),
            check_choice("init_label", init_label, ("source", "destination")), warm_start)


# --------------------------------------------------------------------------- the solver
@torch.no_grad()
def invert_fixed_point(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    budget: Budget = 10,
    window: int = 0,
    damping: float = 1.0,
    ridge: float = 1e-8,
    average_last: int | None = None,
    tol: float | None = None,
    divergence_factor: float | None = 2.0,
    init_label: InitLabel = "destination",
    warm_start: bool = False,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Fixed-point DDIM inversion with the destination label (Meiri et al. 2023; AIDI; ReNoise).

    Per step ``t -> t1``, solve ``move(x, eps_w(x; t1, t1), t1 -> t) = z`` by iterating
    ``G(x) = move(z, eps_w(x; t1, t1), t -> t1)``::

        x_0 = naive step (init_label "destination": G(z); "source": the seed's naive step)
        x <- x + damping * (G(x) - x)                    (window = 0; damping = 1: plain FPI)
        x <- x + b f - (dX + b dF) gamma                 (window = m: Anderson, Walker & Ni 2011)

    The residual form ``x <- x + lr * (z - move(x, e, t1 -> t))`` (the seed; Hong et al.) has
    the same fixed points: for a fixed noise ``e`` the move is affine with slope ``a_t1 / a_t``,
    so ``damping`` here is ``lr * a_t / a_t1`` there.

    ``budget``: evaluations of ``G`` per step (2 NFE per image each, on top of the naive
    step's 2): a count, one count per step, or a function of the grid (:func:`budget_on_levels`,
    :func:`budget_after_fraction`). ``tol``: stop an image when its residual falls below it.
    ``divergence_factor``: stop an image whose residual exceeds that multiple of its best, or
    turns non-finite, and keep its best iterate. An image that ran every iteration returns the
    last, unevaluated ``x_n`` if its last evaluated iterate was its best, else its best; with
    ``average_last=k``, the mean of its last ``k`` map values ``G(x)`` (ReNoise's averaging).
    ``warm_start``: a refined step starts from its naive step plus the previous step's
    correction ``z_i - naive_i``. Callback: a :class:`~cfginv_lite.records.StepInfo` with
    ``residuals``, ``iterations`` and ``stopped``.
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    per_step = per_step_budget(budget, grid)
    window, damping, ridge, average_last, tol, divergence_factor, init_label, warm_start = check_fixed_point_options(
        max(per_step), window, damping, ridge, average_last, tol, divergence_factor, init_label, warm_start)
    abar, steps, dev = model.alphas_cumprod, len(grid) - 1, z.device
    guard, nfe = FiniteGuard(dev), torch.zeros(z.shape[0], dtype=torch.long, device=dev)
    correction = torch.zeros_like(z)
    for i in tqdm(range(steps), desc="invert_fixed_point", disable=not progress, leave=False):
        t, t1, n = grid[i], grid[i + 1], per_step[i]
        a_t, a_t1 = float(abar[t]), float(abar[t1])
        lab = t if init_label == "source" else t1
        noise = guided_noise(model, z, lab, lab, guidance).guided        # naive step
        naive = move(z, noise, a_t, a_t1)
        x = naive + correction if warm_start and n else naive            # x_0
        search, history, recent = FixedPointSearch(x, n), AndersonHistory(x, window, damping, ridge), []
        for _ in range(n):
            if all_stopped(search.active):
                break
            e = guided_noise(model, x, t1, t1, guidance).guided
            g = move(z, e, a_t, a_t1)                                    # G(x)
            r = (z - move(x, e, a_t1, a_t)).abs().flatten(1).mean(1).double()  # residual of x
            noise = where_image(search.active, e, noise)
            go, grew = search.update(x, r, g, tol, divergence_factor)   # keep best, stop per image
            recent = (recent + [g])[-average_last:] if average_last else recent
            x = history.next(x, g, go, grew)                             # damped or Anderson step
        z_next, residual = search.result(x, recent if n and average_last else [])
        nfe += 2 + 2 * search.evals
        guard.update(i, z_next)
        if callback is not None:
            labels = (float(t1), float(t1)) if n else (float(lab), float(lab))
            callback(step_info(i, steps, t, t1, labels, z_next, z, noise, nfe, residual,
                               residuals=search.residual_rows(), iterations=search.evals, stopped=search.stopped))
        correction, z = z_next - naive, z_next
    guard.raise_if_bad("invert_fixed_point", grid, +1)
    return z


__all__ = ["AndersonHistory", "Budget", "FixedPointSearch", "HARD_LEVELS", "NOISY_LEVELS", "all_stopped",
           "anderson_mix", "budget_after_fraction", "budget_on_levels", "check_fixed_point_options",
           "invert_fixed_point", "per_step_budget", "where_image"]
