"""FROZEN copy of cfginv_lite/compensate.py at commit fac9175 (before issue 19). Do not edit."""
from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import torch
from tqdm.auto import tqdm

from ddim19 import FiniteGuard, Guidance, StepCallback, Stop, check_grid, check_latents, guided_noise, move
from cfginv_lite.validation import check_bool, check_choice, check_fraction, check_int, check_optional_real, check_positive

#: Elements of the latent the seed's absolute thresholds were tuned on (4x64x64, SD at 512 px).
REFERENCE_NUMEL = 4 * 64 * 64
LrDecayMode = Literal["faithful", "intended"]
InitLabel = Literal["source", "destination"]


# --------------------------------------------------------------------------- small helpers
def scaled_threshold(value: float, numel_per_image: int) -> float:
    """Convert an absolute ``sum(|.|)`` threshold tuned on a 4x64x64 latent to another size.

    ``value * numel_per_image / 16384``: the same mean error per element. The seed's
    early-stop threshold 5 becomes ``5 / 256 = 0.0195`` on a 1x8x8 digits latent.
    """
    check_int("numel_per_image", numel_per_image, 1)
    return float(value) * numel_per_image / REFERENCE_NUMEL


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where`` with a per-image ``(B,)`` mask broadcast over latents ``(B, ...)``."""
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


def _per_image(x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` values broadcastable against latents ``(B, ...)``."""
    return x.view(-1, 1, 1, 1)


def _all_stopped(active: torch.Tensor) -> bool:
    """True when no image is still iterating, asked only where asking is free (no GPU queue)."""
    return active.device.type == "cpu" and not bool(active.any())


def _report(callback: StepCallback, i: int, steps: int, t: int, t1: int, labels: tuple[float, float],
            latent: torch.Tensor, latent_prev: torch.Tensor, noise: torch.Tensor, nfe: torch.Tensor,
            residual: torch.Tensor, residuals: list[torch.Tensor], iterations: torch.Tensor,
            stopped: torch.Tensor) -> None:
    """The callback dict of the module docstring (no host sync: everything stays a tensor)."""
    rows = torch.stack(residuals) if residuals else residual.new_empty(0, latent.shape[0])
    callback(dict(step=i, steps=steps, t_from=t, t_to=t1, label_uncond=labels[0], label_cond=labels[1],
                  latent=latent, latent_prev=latent_prev, noise=noise, residual=residual, nfe=nfe.clone(),
                  residuals=rows, iterations=iterations, stopped=stopped))


class _Search:
    """Per-image keep-best and stopping of the fixed-point solvers, as ``(B,)`` device tensors.

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
        self.best = _where(improved, x, self.best)
        self.best_r = torch.where(improved, r, self.best_r)
        diverged = ~finite if divergence_factor is None else ~finite | (r > divergence_factor * self.best_r)
        converged = ~diverged & (r < tol) if tol is not None else torch.zeros_like(diverged)
        grew = r > self.last_r  # False on the first evaluation (NaN)
        self.last_r = torch.where(active, r, self.last_r)
        self.stopped = torch.where(active & diverged, Stop.DIVERGED,
                                   torch.where(active & converged, Stop.THRESHOLD, self.stopped))
        self.active = active & ~diverged & ~converged
        return self.active, grew

    def result(self, x: torch.Tensor, recent: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returned latent and its residual (NaN: never evaluated). An image that ran every
        iteration returns the new, unevaluated ``x_n`` if its last evaluated iterate was its best
        (a slowly diverging run must not win), or the mean of the ``recent`` map values."""
        done = (self.stopped == Stop.MAX_ITER) & (self.evals > 0)
        further = done if recent else done & (self.last_r <= self.best_r)
        ahead = torch.stack(recent).mean(0) if recent else x
        residual = torch.where(further | (self.evals == 0), math.nan, self.best_r)
        return _where(further, ahead, _where(self.evals > 0, self.best, self.x0)), residual


def _anderson_mix(hist_x: torch.Tensor, hist_g: torch.Tensor, count: torch.Tensor, damping: float,
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


# --------------------------------------------------------------------------- option checks
def _check_original(grid: list[int], num_train_timesteps: int, refine_iterations: Any, refine_strength: Any,
                    refine_skip: Any, tless_factor: Any, error_threshold: Any, decay_tolerance: Any, lr_decay: Any,
                    lr_decay_mode: Any, divergence_factor: Any, integer_labels: Any = False) -> tuple:
    """The options as Python numbers (numpy scalars accepted), in signature order."""
    opts = (check_int("refine_iterations", refine_iterations, 0), check_positive("refine_strength", refine_strength),
            check_fraction("refine_skip", refine_skip), check_optional_real("tless_factor", tless_factor),
            check_positive("error_threshold", error_threshold, allow_zero=True),
            check_positive("decay_tolerance", decay_tolerance, allow_zero=True),
            check_positive("lr_decay", lr_decay, high=1.0),
            check_choice("lr_decay_mode", lr_decay_mode, ("faithful", "intended")),
            check_optional_real("divergence_factor", divergence_factor, low=1.0, low_open=True),
            check_bool("integer_labels", integer_labels))
    steps, top = len(grid) - 1, num_train_timesteps - 1
    for i in range(steps):  # abar_at would clamp a label outside the schedule silently
        label = _original_labels(grid[i], grid[i + 1], opts[3], opts[9])[0]
        if opts[0] and i > steps * opts[2] and not 0 <= label <= top:
            raise ValueError(f"tless_factor={tless_factor!r} gives the label {label:g} at step {i} "
                             f"({grid[i]} -> {grid[i + 1]}), outside the schedule's levels [0, {top}]")
    return opts


def _original_labels(t: int, t1: int, tless_factor: float | None, integer: bool = False) -> tuple[float, float]:
    """``(tless, t)`` with ``tless = t - (t1 - t) * factor``; ``None``: the destination ``t1`` twice.

    ``integer=True`` rounds ``tless`` half up to a whole level: the network was trained on
    integer labels only, so this control tells the offset apart from the fractional label.
    """
    if tless_factor is None:
        return float(t1), float(t1)
    tless = t - (t1 - t) * float(tless_factor)
    return (float(math.floor(tless + 0.5)) if integer else tless), float(t)


def _check_fixed_point(iterations: Any, damping: Any, average_last: Any, skip: Any, tol: Any,
                       divergence_factor: Any, init_label: Any) -> tuple:
    """The options as Python numbers (numpy scalars accepted), in signature order."""
    iterations = check_int("iterations", iterations, 0)
    if average_last is not None and check_int("average_last", average_last, 1) > max(iterations, 1):
        raise ValueError(f"average_last={average_last} exceeds iterations={iterations}")
    return (iterations, check_positive("damping", damping, high=2.0),
            None if average_last is None else int(average_last), check_fraction("skip", skip),
            check_optional_real("tol", tol, low=0.0),
            check_optional_real("divergence_factor", divergence_factor, low=1.0, low_open=True),
            check_choice("init_label", init_label, ("source", "destination")))


# --------------------------------------------------------------------------- the seed's method
def invert_original(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    refine_iterations: int = 3,
    refine_strength: float = 0.9,
    refine_skip: float = 0.7,
    tless_factor: float | None = 0.25,
    error_threshold: float = 5.0,
    decay_tolerance: float = 1.0,
    lr_decay: float = 0.9,
    lr_decay_mode: LrDecayMode = "faithful",
    divergence_factor: float | None = None,
    integer_labels: bool = False,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """The seed's compensated DDIM inversion (prompt-to-prompt notebook, Oct. 2022), faithfully.

    For each step ``i`` (``t = ts[i]``, ``t1 = ts[i+1]``; reference, step 4):

    1. naive step with the *source* label: ``z1 = move(z, eps_w(z; t, t), t -> t1)``;
    2. only if ``i > steps * refine_skip`` (strictly: 14 of 50 steps at 0.7), up to
       ``refine_iterations`` times: ``e' = eps_w(zr; tless, t)`` with
       ``tless = t - (t1 - t) * tless_factor`` (unconditional branch labelled ``tless``,
       conditional ``t``, although ``zr`` sits at ``t1``), ``back = move(zr, e', t1 -> t)``,
       ``err = sum|z - back|``; keep the best ``zr``; stop once ``min_err < threshold``;
       ``lr *= lr_decay`` if ``min_err - err < decay_tolerance``; ``zr += (z - back) * lr``.
       This is a damped fixed-point iteration on ``move(zr, eps_w(zr), t1 -> t) = z``.

    Quirks kept on purpose (see ``docs/compensated-inversion.md``):

    * ``lr_decay_mode="faithful"``: ``min_err`` is updated before the decay test, so the
      difference is never positive and ``lr`` decays on *every* iteration that does not stop.
      ``"intended"`` compares with the previous ``min_err`` (decay only when the error did
      not improve by at least ``decay_tolerance``; never on the first iteration).
    * The update after the last evaluation is wasted: with 3 iterations the result is the
      best of the naive iterate and two refined ones.
    * ``min_err`` starts at ``1e10``, so the naive iterate is always a candidate.
    * ``tless_factor=None`` uses the "numerically correct" destination label ``t1`` for
      both branches (the author: ``tless``/``t`` "produces way better results in practice").
      A factor whose ``tless`` falls outside the schedule's levels raises ``ValueError``.
    * ``integer_labels=True`` (not in the original) rounds ``tless`` to a whole level, a
      control for the fractional labels the network never saw in training (notebook 04).

    Units: ``error_threshold`` (5) and ``decay_tolerance`` (1) are absolute ``sum(|.|)``
    values tuned on a 4x64x64 latent (16384 elements), scaled here by ``numel / 16384``
    (:func:`scaled_threshold`) so they mean the same *per element* on any latent.

    ``divergence_factor`` (default ``None``: the original had none) stops refining an image
    whose error exceeds ``factor x`` its best; non-finite iterates always stop
    (``Stop.DIVERGED``), which cannot change the result: they could never become the best.
    Cost per image: ``2 * steps`` NFE plus 2 per refinement iteration it used.
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    (refine_iterations, refine_strength, refine_skip, tless_factor, error_threshold, decay_tolerance, lr_decay,
     lr_decay_mode, divergence_factor, integer_labels) = _check_original(
        grid, len(model.alphas_cumprod), refine_iterations, refine_strength, refine_skip, tless_factor,
        error_threshold, decay_tolerance, lr_decay, lr_decay_mode, divergence_factor, integer_labels)
    abar, steps, batch, numel, dev = model.alphas_cumprod, len(grid) - 1, z.shape[0], z[0].numel(), z.device
    threshold, tolerance = scaled_threshold(error_threshold, numel), scaled_threshold(decay_tolerance, numel)
    guard, nfe = FiniteGuard(dev), torch.zeros(batch, dtype=torch.long, device=dev)
    for i in tqdm(range(steps), desc="invert_original", disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        a_t, a_t1 = float(abar[t]), float(abar[t1])
        noise = guided_noise(model, z, t, t, guidance).guided            # 1. naive step, source label
        zr = best = move(z, noise, a_t, a_t1)
        n = refine_iterations if i > steps * refine_skip else 0          # 2. refine the noisiest steps
        labels = _original_labels(t, t1, tless_factor, integer_labels) if n else (float(t), float(t))
        min_err = torch.full((batch,), 1e10, dtype=torch.float64, device=dev)
        lr = torch.full((batch,), refine_strength, dtype=torch.float64, device=dev)
        active = torch.full((batch,), n > 0, device=dev)
        stopped = torch.full((batch,), Stop.MAX_ITER if n else Stop.SKIPPED, device=dev)
        evals, errors = torch.zeros(batch, dtype=torch.long, device=dev), []
        for _ in range(n):
            if _all_stopped(active):
                break
            e = guided_noise(model, zr, *labels, guidance).guided        # eps_w(zr; tless, t)
            back = move(zr, e, a_t1, a_t)                                # one sampling step back down
            err = (z - back).abs().flatten(1).sum(1).double()            # the seed's sum|z - back|
            noise, evals = _where(active, e, noise), evals + active
            errors.append(torch.where(active, err, math.nan) / numel)
            improved = active & torch.isfinite(err) & (err < min_err)    # keep the best zr
            best = _where(improved, zr, best)
            prev_min, min_err = min_err, torch.where(improved, err, min_err)
            hit = active & (min_err < threshold)                         # early stop
            grew = torch.zeros_like(hit) if divergence_factor is None else err > divergence_factor * min_err
            bad = active & ~hit & (~torch.isfinite(err) | grew)          # diverged: stop, keep the best
            go = active & ~hit & ~bad
            reference = min_err if lr_decay_mode == "faithful" else prev_min
            lr = torch.where(go & (reference - err < tolerance), lr * lr_decay, lr)
            zr = _where(go, zr + (z - back) * _per_image(lr.to(z.dtype)), zr)   # zr += (z - back) * lr
            stopped = torch.where(hit, Stop.THRESHOLD, torch.where(bad, Stop.DIVERGED, stopped))
            active = go
        nfe += 2 + 2 * evals
        guard.update(i, best)
        if callback is not None:
            residual = torch.where(evals > 0, min_err / numel, math.nan)
            _report(callback, i, steps, t, t1, labels, best, z, noise, nfe, residual, errors, evals, stopped)
        z = best
    guard.raise_if_bad("invert_original", grid, +1)
    return z


# --------------------------------------------------------------------------- fixed point / Anderson
def invert_fixed_point(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    iterations: int = 10,
    damping: float = 1.0,
    average_last: int | None = None,
    skip: float = 0.0,
    tol: float | None = None,
    divergence_factor: float | None = 2.0,
    init_label: InitLabel = "destination",
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Fixed-point DDIM inversion with the destination label (Meiri et al. 2023; ReNoise).

    Per step, solve ``move(z1, eps_w(z1; t1, t1), t1 -> t) = z`` by iterating the
    "inverse" form used in public code (dvirsamuel/FPI, ReNoise)::

        G(x) = move(z, eps_w(x; t1, t1), t -> t1)
        x <- x + damping * (G(x) - x)                 (damping = 1: x <- G(x), plain FPI)

    The residual form ``x <- x + lr * (z - move(x, e, t1 -> t))`` (the seed; Hong et al.
    CVPR 2024) has the **same fixed points**: for a fixed noise ``e`` the DDIM move is affine
    with slope ``a_t1 / a_t``, so ``G(x) - x = (a_t1 / a_t) * (z - move(x, e, t1 -> t))``
    and ``damping`` here equals ``lr * a_t / a_t1`` there.

    ``x_0`` is the naive step (``init_label="destination"``: ``x_0 = G(z)``; ``"source"``:
    the seed's naive step). ``iterations`` evaluations of ``G`` follow (2 NFE per image each,
    on top of the naive step's 2); steps with ``i >= steps * skip`` are refined (``skip=0``:
    all steps; the seed's rule is strictly ``>``). ``tol``: stop an image when its residual
    (mean ``|z - move(x, e, t1 -> t)|`` per element) falls below it. ``divergence_factor``:
    stop an image whose residual exceeds that multiple of its best, or turns non-finite, and
    keep its best iterate. An image that ran every iteration returns the last, unevaluated
    ``x_n`` if its last evaluated iterate was its best, else its best; with
    ``average_last=k``, the mean of its last ``k`` map values ``G(x)`` (ReNoise's averaging
    of the last noise predictions).
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    iterations, damping, average_last, skip, tol, divergence_factor, init_label = _check_fixed_point(
        iterations, damping, average_last, skip, tol, divergence_factor, init_label)
    abar, steps, dev = model.alphas_cumprod, len(grid) - 1, z.device
    guard, nfe = FiniteGuard(dev), torch.zeros(z.shape[0], dtype=torch.long, device=dev)
    for i in tqdm(range(steps), desc="invert_fixed_point", disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        a_t, a_t1 = float(abar[t]), float(abar[t1])
        lab = t if init_label == "source" else t1
        noise = guided_noise(model, z, lab, lab, guidance).guided        # naive step: x_0
        x = move(z, noise, a_t, a_t1)
        n = iterations if i >= steps * skip else 0
        search, recent = _Search(x, n), []
        for _ in range(n):
            if _all_stopped(search.active):
                break
            e = guided_noise(model, x, t1, t1, guidance).guided
            g = move(z, e, a_t, a_t1)                                    # G(x)
            r = (z - move(x, e, a_t1, a_t)).abs().flatten(1).mean(1).double()  # residual of x
            noise = _where(search.active, e, noise)
            go, _ = search.update(x, r, g, tol, divergence_factor)      # keep best, stop per image
            recent = (recent + [g])[-average_last:] if average_last else recent
            x = _where(go, x + damping * (g - x), x)                     # the damped fixed-point step
        z_next, residual = search.result(x, recent if n and average_last else [])
        nfe += 2 + 2 * search.evals
        guard.update(i, z_next)
        if callback is not None:
            labels = (float(t1), float(t1)) if n else (float(lab), float(lab))
            _report(callback, i, steps, t, t1, labels, z_next, z, noise, nfe, residual, search.rows,
                    search.evals, search.stopped)
        z = z_next
    guard.raise_if_bad("invert_fixed_point", grid, +1)
    return z


def invert_anderson(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    iterations: int = 5,
    window: int = 3,
    damping: float = 1.0,
    ridge: float = 1e-8,
    average_last: int | None = None,
    skip: float = 0.0,
    tol: float | None = None,
    divergence_factor: float | None = 2.0,
    init_label: InitLabel = "destination",
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Anderson-accelerated fixed-point inversion (AIDI: Pan et al., ICCV 2023).

    Same map ``G``, stopping and options as :func:`invert_fixed_point`; each image's
    iterates are flattened and mixed over a window of ``window`` differences (the public
    re-implementation wmchen/diffusion-inversion uses window 3 and 5 iterations per step; the
    paper's own settings are not used here): ``gamma`` from ridge-regularised
    least squares (normal equations in float64, ``ridge`` relative to the Gram diagonal),
    ``x <- x + beta f - (dX + beta dF) gamma`` with ``f = G(x) - x``, ``beta = damping``
    (:func:`_anderson_mix`). Safeguards: a singular or non-finite solve falls back to the
    plain damped step, and an image's history restarts whenever its residual grew since the
    previous iterate. The mixing costs no network evaluations.
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    iterations, damping, average_last, skip, tol, divergence_factor, init_label = _check_fixed_point(
        iterations, damping, average_last, skip, tol, divergence_factor, init_label)
    window, ridge = check_int("window", window, 1), check_positive("ridge", ridge, allow_zero=True)
    abar, steps, batch, dev = model.alphas_cumprod, len(grid) - 1, z.shape[0], z.device
    guard, nfe = FiniteGuard(dev), torch.zeros(batch, dtype=torch.long, device=dev)
    for i in tqdm(range(steps), desc="invert_anderson", disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        a_t, a_t1 = float(abar[t]), float(abar[t1])
        lab = t if init_label == "source" else t1
        noise = guided_noise(model, z, lab, lab, guidance).guided        # naive step: x_0
        x = move(z, noise, a_t, a_t1)
        n = iterations if i >= steps * skip else 0
        search, recent = _Search(x, n), []
        hist_x = hist_g = x.flatten(1)[:, None].repeat(1, window + 1, 1)  # (B, m+1, N), oldest first
        count = torch.zeros(batch, dtype=torch.long, device=dev)          # valid history entries
        for _ in range(n):
            if _all_stopped(search.active):
                break
            e = guided_noise(model, x, t1, t1, guidance).guided
            g = move(z, e, a_t, a_t1)                                    # G(x)
            r = (z - move(x, e, a_t1, a_t)).abs().flatten(1).mean(1).double()  # residual of x
            noise = _where(search.active, e, noise)
            go, grew = search.update(x, r, g, tol, divergence_factor)
            recent = (recent + [g])[-average_last:] if average_last else recent
            count = torch.where(go, torch.where(grew, 1, (count + 1).clamp(max=window + 1)), count)  # grew: restart
            hist_x = _where(go, torch.cat([hist_x[:, 1:], x.flatten(1)[:, None]], 1), hist_x)
            hist_g = _where(go, torch.cat([hist_g[:, 1:], g.flatten(1)[:, None]], 1), hist_g)
            cand, ok = _anderson_mix(hist_x, hist_g, count, damping, ridge)
            plain = x + damping * (g - x)
            x = _where(go, _where(ok, cand.view_as(x).to(x.dtype), plain), x)
        z_next, residual = search.result(x, recent if n and average_last else [])
        nfe += 2 + 2 * search.evals
        guard.update(i, z_next)
        if callback is not None:
            labels = (float(t1), float(t1)) if n else (float(lab), float(lab))
            _report(callback, i, steps, t, t1, labels, z_next, z, noise, nfe, residual, search.rows,
                    search.evals, search.stopped)
        z = z_next
    guard.raise_if_bad("invert_anderson", grid, +1)
    return z


__all__ = ["REFERENCE_NUMEL", "Stop", "invert_anderson", "invert_fixed_point", "invert_original",
           "scaled_threshold"]
