"""The seed's "finite-difference" CFG-compensated DDIM inversion, faithfully (``docs/compensated-inversion.md``).

Per step, after the naive step, the seed refines the noisiest steps with a damped residual
iteration on the implicit equation ``move(z1, eps_w(z1; tless, t), t1 -> t) = z``, keeping the
best iterate, with an absolute early-stop threshold, a quirky learning-rate decay and the
``tless`` label. It is a damped fixed-point iteration (:mod:`cfginv_lite.fixed_point` holds
the family of its relatives); it keeps its own loop here so that every quirk stays visible.
Its options are the named fields of :class:`OriginalOptions`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from tqdm.auto import tqdm

from .ddim import move
from .fixed_point import all_stopped, where_image
from .guidance import Guidance, guided_noise
from .records import StepCallback, Stop, step_info
from .validation import (FiniteGuard, check_bool, check_choice, check_fraction, check_grid, check_int,
                         check_latents, check_optional_real, check_positive)

#: Elements of the latent the seed's absolute thresholds were tuned on (4x64x64, SD at 512 px).
REFERENCE_NUMEL = 4 * 64 * 64
LrDecayMode = Literal["faithful", "intended"]


def scaled_threshold(value: float, numel_per_image: int) -> float:
    """Convert an absolute ``sum(|.|)`` threshold tuned on a 4x64x64 latent to another size.

    ``value * numel_per_image / 16384``: the same mean error per element. The seed's
    early-stop threshold 5 becomes ``5 / 256 = 0.0195`` on a 1x8x8 digits latent.
    """
    check_int("numel_per_image", numel_per_image, 1)
    return float(value) * numel_per_image / REFERENCE_NUMEL


def _original_labels(t: int, t1: int, tless_factor: float | None, integer: bool = False) -> tuple[float, float]:
    """``(tless, t)`` with ``tless = t - (t1 - t) * factor``; ``None``: the destination ``t1`` twice.

    ``integer=True`` rounds ``tless`` half up to a whole level: the network was trained on
    integer labels only, so this control tells the offset apart from the fractional label.
    """
    if tless_factor is None:
        return float(t1), float(t1)
    tless = t - (t1 - t) * float(tless_factor)
    return (float(math.floor(tless + 0.5)) if integer else tless), float(t)


@dataclass(frozen=True)
class OriginalOptions:
    """:func:`invert_original`'s options, checked (numpy scalars accepted), as named fields."""

    refine_iterations: int = 3
    refine_strength: float = 0.9
    refine_skip: float = 0.7
    tless_factor: float | None = 0.25
    error_threshold: float = 5.0
    decay_tolerance: float = 1.0
    lr_decay: float = 0.9
    lr_decay_mode: LrDecayMode = "faithful"
    divergence_factor: float | None = None
    integer_labels: bool = False

    @classmethod
    def checked(cls, grid: list[int], num_train_timesteps: int, **options: Any) -> "OriginalOptions":
        """The options as Python numbers; a ``tless`` label outside the schedule is an error
        (``abar_at`` would clamp it silently)."""
        o = cls(refine_iterations=check_int("refine_iterations", options["refine_iterations"], 0),
                refine_strength=check_positive("refine_strength", options["refine_strength"]),
                refine_skip=check_fraction("refine_skip", options["refine_skip"]),
                tless_factor=check_optional_real("tless_factor", options["tless_factor"]),
                error_threshold=check_positive("error_threshold", options["error_threshold"], allow_zero=True),
                decay_tolerance=check_positive("decay_tolerance", options["decay_tolerance"], allow_zero=True),
                lr_decay=check_positive("lr_decay", options["lr_decay"], high=1.0),
                lr_decay_mode=check_choice("lr_decay_mode", options["lr_decay_mode"], ("faithful", "intended")),
                divergence_factor=check_optional_real("divergence_factor", options["divergence_factor"], low=1.0,
                                                      low_open=True),
                integer_labels=check_bool("integer_labels", options["integer_labels"]))
        steps, top = len(grid) - 1, num_train_timesteps - 1
        for i in range(steps):
            label = _original_labels(grid[i], grid[i + 1], o.tless_factor, o.integer_labels)[0]
            if o.refine_iterations and o.refined(i, steps) and not 0 <= label <= top:
                raise ValueError(f"tless_factor={options['tless_factor']!r} gives the label {label:g} at step {i} "
                                 f"({grid[i]} -> {grid[i + 1]}), outside the schedule's levels [0, {top}]")
        return o

    def refined(self, i: int, steps: int) -> bool:
        """The seed's rule: refine step ``i`` only if ``i > steps * refine_skip`` (strictly)."""
        return i > steps * self.refine_skip


# --------------------------------------------------------------------------- the seed's method
@torch.no_grad()
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
    o = OriginalOptions.checked(
        grid, len(model.alphas_cumprod), refine_iterations=refine_iterations, refine_strength=refine_strength,
        refine_skip=refine_skip, tless_factor=tless_factor, error_threshold=error_threshold,
        decay_tolerance=decay_tolerance, lr_decay=lr_decay, lr_decay_mode=lr_decay_mode,
        divergence_factor=divergence_factor, integer_labels=integer_labels)
    abar, steps, dev = model.alphas_cumprod, len(grid) - 1, z.device
    guard, nfe = FiniteGuard(dev), torch.zeros(z.shape[0], dtype=torch.long, device=dev)
    for i in tqdm(range(steps), desc="invert_original", disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        noise = guided_noise(model, z, t, t, guidance).guided            # 1. naive step, source label
        z1 = move(z, noise, float(abar[t]), float(abar[t1]))
        n = o.refine_iterations if o.refined(i, steps) else 0            # 2. refine the noisiest steps
        labels = _original_labels(t, t1, o.tless_factor, o.integer_labels) if n else (float(t), float(t))
        best, noise, r = _refine(model, z, z1, noise, (float(abar[t]), float(abar[t1])), labels, guidance, n, o)
        nfe += 2 + 2 * r["iterations"]
        guard.update(i, best)
        if callback is not None:
            callback(step_info(i, steps, t, t1, labels, best, z, noise, nfe, **r))
        z = best
    guard.raise_if_bad("invert_original", grid, +1)
    return z


def _refine(model: Any, z: torch.Tensor, zr: torch.Tensor, noise: torch.Tensor, abars: tuple[float, float],
            labels: tuple[float, float], guidance: Guidance, n: int, o: OriginalOptions,
            ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Step 2 of the seed's loop on one step ``t -> t1``: up to ``n`` refinements of the naive ``zr``.

    Returns the best iterate, the noise of each image's last evaluation, and the record's
    ``residual``, ``residuals``, ``iterations`` and ``stopped`` (per image, on the device).
    """
    (a_t, a_t1), batch, numel, dev = abars, z.shape[0], z[0].numel(), z.device
    threshold, tolerance = scaled_threshold(o.error_threshold, numel), scaled_threshold(o.decay_tolerance, numel)
    best, min_err = zr, torch.full((batch,), 1e10, dtype=torch.float64, device=dev)
    lr = torch.full((batch,), o.refine_strength, dtype=torch.float64, device=dev)
    active = torch.full((batch,), n > 0, device=dev)
    stopped = torch.full((batch,), Stop.MAX_ITER if n else Stop.SKIPPED, device=dev)
    evals, errors = torch.zeros(batch, dtype=torch.long, device=dev), []
    for _ in range(n):
        if all_stopped(active):
            break
        e = guided_noise(model, zr, *labels, guidance).guided            # eps_w(zr; tless, t)
        back = move(zr, e, a_t1, a_t)                                    # one sampling step back down
        err = (z - back).abs().flatten(1).sum(1).double()                # the seed's sum|z - back|
        noise, evals = where_image(active, e, noise), evals + active
        errors.append(torch.where(active, err, math.nan) / numel)
        improved = active & torch.isfinite(err) & (err < min_err)        # keep the best zr
        best = where_image(improved, zr, best)
        prev_min, min_err = min_err, torch.where(improved, err, min_err)
        hit = active & (min_err < threshold)                             # early stop
        grew = torch.zeros_like(hit) if o.divergence_factor is None else err > o.divergence_factor * min_err
        bad = active & ~hit & (~torch.isfinite(err) | grew)              # diverged: stop, keep the best
        go = active & ~hit & ~bad
        reference = min_err if o.lr_decay_mode == "faithful" else prev_min
        lr = torch.where(go & (reference - err < tolerance), lr * o.lr_decay, lr)
        zr = where_image(go, zr + (z - back) * lr.to(z.dtype).view(-1, 1, 1, 1), zr)   # zr += (z - back) * lr
        stopped = torch.where(hit, Stop.THRESHOLD, torch.where(bad, Stop.DIVERGED, stopped))
        active = go
    rows = torch.stack(errors) if errors else min_err.new_empty(0, batch)
    residual = torch.where(evals > 0, min_err / numel, math.nan)
    return best, noise, dict(residual=residual, residuals=rows, iterations=evals, stopped=stopped)


__all__ = ["LrDecayMode", "OriginalOptions", "REFERENCE_NUMEL", "invert_original", "scaled_threshold"]
