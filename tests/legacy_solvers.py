"""FROZEN copy of ``cfginv_lite/compensate.py`` as of commit c335cda (before issue 9's rewrite).

Do not edit: ``tests/test_bit_identity.py`` compares the rewritten solvers against these, bit
for bit, at runtime (so the comparison holds on any CPU). Trimmed of ``is_collapsed`` and long
docstrings only; the solver code is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from cfginv_lite.ddim import move
from cfginv_lite.guidance import Guidance, guided_noise
from cfginv_lite.records import StepCallback
from cfginv_lite.validation import check_grid, check_latents, FiniteGuard

#: Elements of the latent the seed's absolute thresholds were tuned on (4x64x64, SD at 512 px).
REFERENCE_NUMEL = 4 * 64 * 64
LrDecayMode = Literal["faithful", "intended"]
InitLabel = Literal["source", "destination"]
STOP_REASONS = ("threshold", "max_iter", "diverged", "skipped")

# evaluate(x_active, idx) -> (noise, back, forward_map); see _Evaluator.
Evaluate = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------- small helpers
def scaled_threshold(value: float, numel_per_image: int) -> float:
    """Convert an absolute ``sum(|.|)`` threshold tuned on a 4x64x64 latent to another size.

    ``value * numel_per_image / 16384``: the same mean error per element. The seed's
    early-stop threshold 5 becomes ``5 / 256 = 0.0195`` on a 1x8x8 digits latent.
    """
    if numel_per_image <= 0:
        raise ValueError(f"numel_per_image must be positive, got {numel_per_image}")
    return float(value) * numel_per_image / REFERENCE_NUMEL


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_positive(name: str, value: Any, *, allow_zero: bool = False, upper: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0) and (upper is None or value <= upper)
    if not ok:
        bound = (">= 0" if allow_zero else "> 0") + (f" and <= {upper}" if upper is not None else "")
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_divergence(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 1 or not math.isfinite(value):
        raise ValueError(f"divergence_factor must be None or a finite number > 1, got {value!r}")
    return float(value)


def _subset(guidance: Guidance, idx: torch.Tensor, batch: int) -> Guidance:
    """Guidance for the images ``idx`` of a batch (per-image embeddings are indexed)."""
    def pick(e: torch.Tensor) -> torch.Tensor:
        return e[idx.to(e.device)] if e.shape[0] == batch and idx.numel() != batch else e
    return Guidance(pick(guidance.cond), pick(guidance.uncond), guidance.scale)


def _mean_abs(x: torch.Tensor) -> torch.Tensor:
    return x.detach().abs().flatten(1).mean(dim=1)


class _Evaluator:
    """One batched guided evaluation at level ``t1`` of the iterates of the active images.

    Returns ``(noise, back, forward_map)`` with ``back = move(x, e, t1 -> t)`` (one
    sampling step down, the left side of the implicit equation) and
    ``forward_map = move(z, e, t -> t1)`` (the fixed-point map ``G(x)``).
    """

    def __init__(self, model: Any, z: torch.Tensor, guidance: Guidance, abar_t: float, abar_t1: float,
                 label_uncond: float, label_cond: float) -> None:
        self.model, self.z, self.guidance = model, z, guidance
        self.abar_t, self.abar_t1 = abar_t, abar_t1
        self.label_uncond, self.label_cond = label_uncond, label_cond

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.z.shape[0]
        guidance = _subset(self.guidance, idx, batch)
        e = guided_noise(self.model, x, self.label_uncond, self.label_cond, guidance).guided
        z = self.z[idx]
        return e, move(x, e, self.abar_t1, self.abar_t), move(z, e, self.abar_t, self.abar_t1)


@dataclass
class _Outcome:
    """What refining one step produced, per image."""

    latent: torch.Tensor                      # (B, ...) the returned z1
    noise: torch.Tensor | None                # last evaluated guided noise (B, ...), None if no eval
    iterations: torch.Tensor                  # (B,) long, evaluations run
    best_iteration: torch.Tensor              # (B,) long, -1 = none (averaged / skipped)
    residual: torch.Tensor                    # (B,) residual of the returned latent, NaN = unknown
    residuals: list[torch.Tensor]             # per iteration, (B,) with NaN where not evaluated
    stopped: list[str]                        # per image
    lrs: list[torch.Tensor] = field(default_factory=list)  # original only: lr used per update (NaN = none)


# --------------------------------------------------------------------------- the seed's refinement
def _evaluate_active(z: torch.Tensor, x: torch.Tensor, active: torch.Tensor, evaluate: Evaluate,
                     noise: torch.Tensor | None, evals: torch.Tensor,
                     reduce: Callable[[torch.Tensor], torch.Tensor]):
    """Evaluate the still-iterating images' iterates in ONE batched call and do the shared
    bookkeeping (noise, evaluation counts, the residual row with NaN for inactive images).

    Returns ``None`` when no image is active, else ``(idx, back, g, err, row, noise)``; ``err``
    is on the CPU because the per-image control flow that follows decides in Python.
    """
    idx = active.nonzero().flatten()
    if idx.numel() == 0:
        return None
    e, back, g = evaluate(x[idx], idx)
    noise = torch.zeros_like(z) if noise is None else noise
    noise[idx] = e.detach()
    evals[idx] += 1
    err = reduce((z[idx] - back).detach()).to("cpu", torch.float64)
    row = torch.full((z.shape[0],), math.nan, dtype=torch.float64)
    row[idx] = err
    return idx, back, g, err, row, noise


def _refine_original(
    z: torch.Tensor,
    z_next: torch.Tensor,
    evaluate: Evaluate,
    *,
    iterations: int,
    strength: float,
    threshold: float,
    decay_tolerance: float,
    lr_decay: float,
    lr_decay_mode: LrDecayMode,
    divergence_factor: float | None,
) -> _Outcome:
    """One refined step of the seed's method, per image; ``threshold``/``decay_tolerance``
    are absolute ``sum(|z - back|)`` values for *this* latent size (already scaled).

    Control flow per iteration (reference, step 4): evaluate ``err = sum|z - back(zr)|``;
    keep ``zr`` if ``err < min_err``; stop if ``min_err < threshold``; decay ``lr`` if
    ``min_err - err < decay_tolerance`` (faithful: ``min_err`` already updated, so always;
    intended: the previous ``min_err``); ``zr += (z - back) * lr``. The update made after
    the last evaluation is never evaluated, hence never returned - as in the original.
    """
    batch = z.shape[0]
    numel = z[0].numel()
    zr, best = z_next.clone(), z_next.clone()
    min_err = torch.full((batch,), 1e10, dtype=torch.float64)
    lr = torch.full((batch,), strength, dtype=torch.float64)
    best_it = torch.zeros(batch, dtype=torch.long)
    evals = torch.zeros(batch, dtype=torch.long)
    active = torch.ones(batch, dtype=torch.bool)
    stopped = ["max_iter"] * batch if iterations > 0 else ["skipped"] * batch
    noise: torch.Tensor | None = None
    errors: list[torch.Tensor] = []
    lrs: list[torch.Tensor] = []
    for k in range(iterations):
        evaluated = _evaluate_active(z, zr, active, evaluate, noise, evals, lambda d: d.abs().flatten(1).sum(1))
        if evaluated is None:
            break
        idx, back, _, err, row, noise = evaluated
        errors.append(row)
        finite = torch.isfinite(err)
        prev_min = min_err[idx].clone()
        improved = finite & (err < prev_min)
        sel = idx[improved]
        best[sel] = zr[sel]
        best_it[sel] = k
        min_err[idx] = torch.where(improved, err, prev_min)
        new_min = min_err[idx]
        stop_thr = new_min < threshold
        # Non-finite iterates can never become best and stay non-finite, so stopping them
        # changes nothing but the cost. Growth is only checked when asked (not in the original).
        diverged = ~finite & ~stop_thr
        if divergence_factor is not None:
            diverged |= (err > divergence_factor * new_min) & ~stop_thr
        reference = new_min if lr_decay_mode == "faithful" else prev_min
        cont = ~stop_thr & ~diverged
        decay = cont & ((reference - err) < decay_tolerance)
        lr[idx] = torch.where(decay, lr[idx] * lr_decay, lr[idx])
        lr_row = torch.full((batch,), math.nan, dtype=torch.float64)
        go = idx[cont]
        lr_row[go] = lr[go]
        lrs.append(lr_row)
        if go.numel():
            step_lr = lr[go].to(device=z.device, dtype=z.dtype).view(-1, *([1] * (z.ndim - 1)))
            zr[go] = zr[go] + (z[go] - back[cont]) * step_lr
        for b in idx[stop_thr].tolist():
            stopped[b] = "threshold"
        for b in idx[diverged].tolist():
            stopped[b] = "diverged"
        active[idx[~cont]] = False
    residual = torch.where(evals > 0, min_err / numel, torch.full_like(min_err, math.nan))
    best_it = torch.where(evals > 0, best_it, torch.full_like(best_it, -1))
    return _Outcome(latent=best, noise=noise, iterations=evals, best_iteration=best_it,
                    residual=residual, residuals=[r / numel for r in errors], stopped=stopped, lrs=lrs)


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
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """The seed's compensated DDIM inversion (prompt-to-prompt notebook, Oct. 2022), faithfully.

    For each step ``i`` (``t = ts[i]``, ``t1 = ts[i+1]``):

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

    Units: ``error_threshold`` (5) and ``decay_tolerance`` (1) are absolute ``sum(|.|)``
    values tuned on a 4x64x64 latent (16384 elements). They are scaled here by
    ``numel_per_image / 16384`` so they mean the same *per element* on any latent (on the
    1x8x8 digits latent: 5/256 and 1/256); pass them in the reference units.

    ``divergence_factor`` (default ``None``: the original had none) stops refining an image
    whose error exceeds ``factor x`` its best; non-finite iterates are always dropped
    (``stopped="diverged"``), which cannot change the result because the original could
    never have picked them. Cost per image: ``2 * steps`` NFE plus 2 per refinement
    iteration actually run.
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    _check_int("refine_iterations", refine_iterations, 0)
    _check_positive("refine_strength", refine_strength)
    _check_fraction("refine_skip", refine_skip)
    if tless_factor is not None and (isinstance(tless_factor, bool) or not isinstance(tless_factor, (int, float))
                                     or not math.isfinite(tless_factor)):
        raise ValueError(f"tless_factor must be None or a finite number, got {tless_factor!r}")
    _check_positive("error_threshold", error_threshold, allow_zero=True)
    _check_positive("decay_tolerance", decay_tolerance, allow_zero=True)
    _check_positive("lr_decay", lr_decay, upper=1.0)
    if lr_decay_mode not in ("faithful", "intended"):
        raise ValueError(f"lr_decay_mode must be 'faithful' or 'intended', got {lr_decay_mode!r}")
    divergence_factor = _check_divergence(divergence_factor)
    numel = z[0].numel()
    threshold = scaled_threshold(error_threshold, numel)
    tolerance = scaled_threshold(decay_tolerance, numel)
    steps = len(grid) - 1

    def refine_labels(t: int, t1: int) -> tuple[float, float]:
        if tless_factor is None:
            return float(t1), float(t1)
        return t - (t1 - t) * float(tless_factor), float(t)

    def refine(z: torch.Tensor, z_next: torch.Tensor, evaluate: Evaluate) -> _Outcome:
        return _refine_original(z, z_next, evaluate, iterations=refine_iterations, strength=float(refine_strength),
                                threshold=threshold, decay_tolerance=tolerance, lr_decay=float(lr_decay),
                                lr_decay_mode=lr_decay_mode, divergence_factor=divergence_factor)

    return _drive("invert_original", model, z, grid, guidance, naive_label="source",
                  should_refine=lambda i: i > steps * refine_skip, refine_labels=refine_labels,
                  refine=refine, callback=callback, progress=progress)


# --------------------------------------------------------------------------- fixed point / Anderson
def _anderson_mix(xs: list[torch.Tensor], gs: list[torch.Tensor], damping: float, ridge: float) -> torch.Tensor | None:
    """Anderson (type II) candidate from a history of iterates ``xs`` and map values ``gs``.

    With ``f = G(x) - x``, ``dF``/``dX`` the successive differences of the window:
    ``gamma = argmin |f_k - dF gamma|^2 + lam |gamma|^2`` (ridge-regularised normal
    equations, ``lam = ridge * mean diag(dF dF^T)``), then
    ``x_{k+1} = x_k + beta f_k - (dX + beta dF) gamma`` (Walker & Ni 2011, eq. 2.3).
    Returns ``None`` if the solve fails or gives a non-finite candidate.
    """
    x = torch.stack(xs).double()
    g = torch.stack(gs).double()
    f = g - x
    d_f, d_x = f[1:] - f[:-1], x[1:] - x[:-1]
    gram = d_f @ d_f.T
    m = gram.shape[0]
    lam = ridge * (gram.diagonal().mean() + 1e-30)
    try:
        gamma = torch.linalg.solve(gram + lam * torch.eye(m, dtype=gram.dtype, device=gram.device), d_f @ f[-1])
    except RuntimeError:
        return None
    cand = x[-1] + damping * f[-1] - (d_x + damping * d_f).T @ gamma
    return cand if torch.isfinite(cand).all() else None


def _solve_fixed_point(
    z: torch.Tensor,
    x0: torch.Tensor,
    evaluate: Evaluate,
    *,
    iterations: int,
    damping: float,
    window: int,
    ridge: float,
    average_last: int | None,
    tol: float | None,
    divergence_factor: float | None,
) -> _Outcome:
    """Iterate ``x <- x + damping * (G(x) - x)`` (``window > 0``: Anderson-accelerated).

    ``G(x) = move(z, eps_w(x; t1), t -> t1)``. Iteration ``k`` evaluates iterate ``x_k``
    (``x_0`` = the naive step) and produces ``x_{k+1}``. Per image: stop at
    ``residual < tol`` (return that iterate) or on divergence (non-finite, or residual
    ``> divergence_factor x`` the best: return the best evaluated iterate). After the last
    iteration return the new, unevaluated ``x_n`` if the last evaluated iterate was the best
    so far, else the best evaluated one (a slowly diverging run must not win); with
    ``average_last=k``, the mean of the last ``k`` map values ``G(x)``.
    """
    batch = z.shape[0]
    x, best = x0.clone(), x0.clone()
    best_r = torch.full((batch,), math.inf, dtype=torch.float64)
    last_r = torch.full((batch,), math.nan, dtype=torch.float64)
    best_it = torch.zeros(batch, dtype=torch.long)
    evals = torch.zeros(batch, dtype=torch.long)
    active = torch.ones(batch, dtype=torch.bool)
    stopped = ["max_iter"] * batch if iterations > 0 else ["skipped"] * batch
    hist_x: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    hist_g: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    recent_g: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    noise: torch.Tensor | None = None
    residuals: list[torch.Tensor] = []
    for k in range(iterations):
        evaluated = _evaluate_active(z, x, active, evaluate, noise, evals, _mean_abs)
        if evaluated is None:
            break
        idx, back, g, r, row, noise = evaluated
        residuals.append(row)
        finite = torch.isfinite(r) & torch.isfinite(g.detach()).flatten(1).all(1).cpu()
        improved = finite & (r < best_r[idx])
        sel = idx[improved]
        best[sel] = x[sel]
        best_r[sel] = r[improved]
        best_it[sel] = k
        diverged = ~finite
        if divergence_factor is not None:
            diverged |= r > divergence_factor * best_r[idx]
        converged = ~diverged & (r < tol) if tol is not None else torch.zeros_like(diverged)
        grew = r > last_r[idx]  # False on the first evaluation (NaN)
        last_r[idx] = r
        for j, b in enumerate(idx.tolist()):
            if diverged[j] or converged[j]:
                stopped[b] = "diverged" if diverged[j] else "threshold"
                active[b] = False
                continue
            gb = g[j].detach()
            if average_last:
                recent_g[b] = (recent_g[b] + [gb])[-average_last:]
            plain = x[b] + damping * (gb - x[b])
            if window == 0:
                x[b] = plain
                continue
            if grew[j]:  # safeguard: the last Anderson step made things worse -> restart
                hist_x[b], hist_g[b] = [], []
            hist_x[b] = (hist_x[b] + [x[b].flatten().clone()])[-(window + 1):]  # x is updated in place
            hist_g[b] = (hist_g[b] + [gb.flatten()])[-(window + 1):]
            cand = _anderson_mix(hist_x[b], hist_g[b], damping, ridge) if len(hist_x[b]) > 1 else None
            x[b] = plain if cand is None else cand.view_as(plain).to(plain.dtype)
    out = best.clone()
    residual = best_r.clone()
    result_it = best_it.clone()
    for b in range(batch):
        if evals[b] == 0:
            out[b], residual[b], result_it[b] = x0[b], math.nan, -1
        elif stopped[b] == "max_iter":
            if average_last:
                out[b] = torch.stack(recent_g[b]).mean(0)
                residual[b], result_it[b] = math.nan, -1
            elif last_r[b] <= best_r[b]:  # the last evaluated iterate was the best: go one further
                out[b], residual[b], result_it[b] = x[b], math.nan, int(evals[b])
    return _Outcome(latent=out, noise=noise, iterations=evals, best_iteration=result_it,
                    residual=residual, residuals=residuals, stopped=stopped)


def _check_fixed_point_options(iterations: int, damping: float, average_last: int | None, skip: float,
                               tol: float | None, divergence_factor: float | None, init_label: str) -> float | None:
    _check_int("iterations", iterations, 0)
    _check_positive("damping", damping, upper=2.0)
    if average_last is not None:
        _check_int("average_last", average_last, 1)
        if average_last > max(iterations, 1):
            raise ValueError(f"average_last={average_last} exceeds iterations={iterations}")
    _check_fraction("skip", skip)
    if tol is not None:
        _check_positive("tol", tol, allow_zero=True)
    if init_label not in ("source", "destination"):
        raise ValueError(f"init_label must be 'source' or 'destination', got {init_label!r}")
    return _check_divergence(divergence_factor)


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
    all steps; note the seed's rule is strictly ``>``). ``tol``: stop when the residual
    (mean ``|z - move(x, e, t1 -> t)|`` per element) falls below it. ``average_last=k``:
    return the mean of the last ``k`` noise estimates' steps ``move(z, e_j, t -> t1)``, i.e.
    ReNoise's averaging of late noise predictions (equivalently of the last ``k`` map values).
    ``divergence_factor``: stop an image whose residual exceeds that multiple of its best,
    or turns non-finite, and keep its best iterate (``stopped="diverged"``).
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    divergence_factor = _check_fixed_point_options(iterations, damping, average_last, skip, tol,
                                                   divergence_factor, init_label)
    return _fixed_point_family("invert_fixed_point", model, z, grid, guidance, iterations=iterations,
                               damping=float(damping), window=0, ridge=0.0, average_last=average_last, skip=skip,
                               tol=tol, divergence_factor=divergence_factor, init_label=init_label,
                               callback=callback, progress=progress)


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

    Same map ``G`` and options as :func:`invert_fixed_point`; each image's iterates are
    flattened and mixed over a window of ``window`` differences (AIDI uses 3, 5 iterations
    per step in public re-implementations): ``gamma`` from ridge-regularised least squares
    (normal equations in float64, ``ridge`` relative to the Gram diagonal),
    ``x <- x + beta f - (dX + beta dF) gamma`` with ``f = G(x) - x``, ``beta = damping``.
    Safeguards: a non-finite or failed solve falls back to the plain damped step, and the
    history restarts whenever the residual grew since the previous iterate. Divergence
    handling as in :func:`invert_fixed_point`. The mixing costs no network evaluations.
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    divergence_factor = _check_fixed_point_options(iterations, damping, average_last, skip, tol,
                                                   divergence_factor, init_label)
    _check_int("window", window, 1)
    _check_positive("ridge", ridge, allow_zero=True)
    return _fixed_point_family("invert_anderson", model, z, grid, guidance, iterations=iterations,
                               damping=float(damping), window=window, ridge=float(ridge), average_last=average_last,
                               skip=skip, tol=tol, divergence_factor=divergence_factor, init_label=init_label,
                               callback=callback, progress=progress)


def _fixed_point_family(name: str, model: Any, z: torch.Tensor, grid: list[int], guidance: Guidance, *,
                        iterations: int, damping: float, window: int, ridge: float, average_last: int | None,
                        skip: float, tol: float | None, divergence_factor: float | None, init_label: str,
                        callback: StepCallback | None, progress: bool) -> torch.Tensor:
    steps = len(grid) - 1

    def refine(z: torch.Tensor, z_next: torch.Tensor, evaluate: Evaluate) -> _Outcome:
        return _solve_fixed_point(z, z_next, evaluate, iterations=iterations, damping=damping, window=window,
                                  ridge=ridge, average_last=average_last, tol=tol,
                                  divergence_factor=divergence_factor)

    return _drive(name, model, z, grid, guidance, naive_label=init_label,
                  should_refine=lambda i: i >= steps * skip, refine_labels=lambda t, t1: (float(t1), float(t1)),
                  refine=refine, callback=callback, progress=progress)


# --------------------------------------------------------------------------- the shared loop
def _summary_stop(reasons: list[str]) -> str:
    if len(set(reasons)) == 1:
        return reasons[0]
    return next(r for r in ("diverged", "max_iter", "threshold", "skipped") if r in reasons)


def _drive(
    name: str,
    model: Any,
    z: torch.Tensor,
    grid: list[int],
    guidance: Guidance,
    *,
    naive_label: str,
    should_refine: Callable[[int], bool],
    refine_labels: Callable[[int, int], tuple[float, float]],
    refine: Callable[[torch.Tensor, torch.Tensor, Evaluate], _Outcome],
    callback: StepCallback | None,
    progress: bool,
) -> torch.Tensor:
    """Walk the grid upwards: naive step, then ``refine`` where ``should_refine(i)``."""
    abar = model.alphas_cumprod
    guard = FiniteGuard(z.device)
    steps = len(grid) - 1
    batch = z.shape[0]
    nfe = torch.zeros(batch, dtype=torch.long)
    for i in tqdm(range(steps), desc=name, disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        a_t, a_t1 = float(abar[t]), float(abar[t1])
        lab = t if naive_label == "source" else t1
        est = guided_noise(model, z, lab, lab, guidance)
        nfe += 2
        z_next = move(z, est.guided, a_t, a_t1)
        info: dict[str, Any] = dict(step=i, steps=steps, t_from=t, t_to=t1, label_uncond=lab, label_cond=lab,
                                    latent_prev=z, noise=est.guided)
        if should_refine(i):
            lu, lc = refine_labels(t, t1)
            outcome = refine(z, z_next, _Evaluator(model, z, guidance, a_t, a_t1, lu, lc))
            nfe += 2 * outcome.iterations
            z_next = outcome.latent
            info.update(label_uncond=lu, label_cond=lc)
            if outcome.noise is not None:
                info["noise"] = outcome.noise
        else:
            outcome = _Outcome(latent=z_next, noise=None, iterations=torch.zeros(batch, dtype=torch.long),
                               best_iteration=torch.full((batch,), -1, dtype=torch.long),
                               residual=torch.full((batch,), math.nan, dtype=torch.float64),
                               residuals=[], stopped=["skipped"] * batch)
        guard.update(i, z_next)
        if callback is not None:
            per_it = torch.stack(outcome.residuals) if outcome.residuals else torch.empty(0, batch, dtype=torch.float64)
            known = ~torch.isnan(outcome.residual)
            best_known = outcome.best_iteration[outcome.best_iteration >= 0]
            info.update(
                latent=z_next,
                residual=float(outcome.residual.mean()) if bool(known.all()) else None,
                residuals=[float(row[~torch.isnan(row)].mean()) for row in per_it],
                iterations=int(outcome.iterations.max()),
                stopped=_summary_stop(outcome.stopped),
                best_iteration=int(best_known.max()) if best_known.numel() else None,
                nfe=int(nfe.max()),
                residual_per_image=outcome.residual.float(),
                residuals_per_image=per_it.float(),
                iterations_per_image=outcome.iterations.clone(),
                best_iteration_per_image=outcome.best_iteration.clone(),
                stopped_per_image=list(outcome.stopped),
                nfe_per_image=nfe.clone(),
            )
            callback(info)
        z = z_next
    guard.raise_if_bad(name, grid, +1)
    return z
