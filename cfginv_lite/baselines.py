"""Non-iterative and optimisation-based baselines: negative-prompt and null-text inversion.

Both keep the noise of a plain DDIM inversion at guidance scale 1 (the "pivot", which a
w = 1 round trip reproduces well) and change what *regeneration* uses as the unconditional
branch, instead of correcting the inverted noise:

* negative-prompt inversion (Miyake et al. 2023, "Negative-prompt inversion: fast image
  inversion for editing with text-guided diffusion models"): the conditional embedding
  replaces the null one, at no extra cost;
* null-text inversion (Mokady et al., CVPR 2023, "Null-text inversion for editing real
  images using guided diffusion models"): per sampling step, the null embedding is
  optimised with Adam so that the guided DDIM step at scale ``w`` follows the pivot.

Exact-by-construction inversions (EDICT, BDIA), which need their own samplers, are in
:mod:`cfginv_lite.exact`.

What this package's null-text inversion is ("null-text, reduced" where a table needs the
distinction). Mokady et al.'s code (google/prompt-to-prompt, ``null_text_w_ptp.ipynb``) builds
its pivot with DDIM inversion at guidance 1 (its ``ddim_loop``), and its ``next_step`` moves a
latent from level ``t - 20`` to ``t`` with the noise the UNet predicts *at the current latent
with the label t*, the level the step moves to: in this package's terms the **destination**
label. It then optimises the null embedding per step with Adam, ``lr = 1e-2 * (1 - i / 100)``,
up to 10 inner steps, stopping once the loss is ``< 1e-5 + 2e-5 i``. :func:`invert_null_text`
keeps the w = 1 pivot and the Adam loop but, **by default**, differs in two ways: the pivot uses
the seed's ``label="source"`` (the level the step starts from), and the schedule is rescaled to
the number of steps (``lr * (1 - 0.5 i / steps)``, early stop at ``eps + 1e-3 i / steps``: equal
to Mokady et al.'s numbers at 50 steps only). ``label="destination", schedule="reference"``
follows their code (lr and stop threshold as numbers of ``i``, whatever the step count).
"""
from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import torch
from tqdm.auto import tqdm

from .ddim import move
from .guidance import Guidance, cfg_combine, expand_batch, timestep_labels
from .records import InversionResult, StepCallback, Stop, step_info
from .validation import FiniteGuard, check_choice, check_grid, check_int, check_latents, check_positive


def invert_conditional(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    cond: torch.Tensor,
    *,
    label: Literal["source", "destination"] = "source",
    callback: StepCallback | None = None,
    progress: bool = True,
) -> list[torch.Tensor]:
    """DDIM inversion at guidance scale 1, conditional branch only (1 NFE per step and image).

    ``eps_w`` at ``w = 1`` is ``eps_c``, so the unconditional branch is not evaluated.
    Returns the trajectory ``[z_{ts[0]}, ..., z_{ts[-1]}]`` (the pivot of null-text
    inversion). The default ``"source"`` label is the seed's convention; Mokady et al.'s code
    uses the ``"destination"`` label for its pivot (its ``next_step`` evaluates the current
    latent with the label of the level it moves to).
    """
    check_choice("label", label, ("source", "destination"))
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    cond = expand_batch(cond, z.shape[0], "conditional embeddings")
    abar = model.alphas_cumprod
    steps = len(grid) - 1
    guard = FiniteGuard(z.device)
    trajectory = [z]
    for i in tqdm(range(steps), desc="DDIM inversion (w=1)", disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        lab = t if label == "source" else t1
        with torch.no_grad():
            eps = model.predict_noise(z, timestep_labels(lab, z.shape[0], z.device), cond)
        z_next = move(z, eps, float(abar[t]), float(abar[t1]))
        guard.update(i, z_next)
        if callback is not None:
            callback(step_info(i, steps, t, t1, (None, lab), z_next, z, eps, i + 1, phase="pivot"))
        trajectory.append(z_next)
        z = z_next
    guard.raise_if_bad("invert_conditional", grid, +1)
    return trajectory


def invert_negative_prompt(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    label: Literal["source", "destination"] = "source",
    callback: StepCallback | None = None,
    progress: bool = True,
) -> InversionResult:
    """Negative-prompt inversion (Miyake et al. 2023).

    Invert at ``w = 1`` (conditional branch only: ``steps`` NFE per image), and regenerate
    with the conditional embedding in place of the null one. Null-text inversion's optimised
    null embedding approximates exactly that (Miyake et al., sec. 3), at zero extra cost.
    For *reconstruction* this makes ``eps_w = eps_c`` whatever ``w`` is - the regeneration
    is the w = 1 round trip; the scale matters when editing (``cond`` = a new prompt,
    ``uncond`` = the source prompt's embedding, which the returned guidance carries).
    """
    z = check_latents(model, latents)
    batch = z.shape[0]
    cond = expand_batch(guidance.cond, batch, "conditional embeddings")
    trajectory = invert_conditional(model, z, timesteps, cond, label=label, callback=callback, progress=progress)
    regen = Guidance(cond=cond, uncond=cond, scale=guidance.scale)
    return InversionResult(trajectory[-1], regen, nfe=len(trajectory) - 1, nfe_backward=0)


def invert_null_text(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    inner_steps: int = 10,
    lr: float = 1e-2,
    early_stop_eps: float = 1e-5,
    label: Literal["source", "destination"] = "source",
    schedule: Literal["scaled", "reference"] = "scaled",
    callback: StepCallback | None = None,
    progress: bool = True,
) -> InversionResult:
    """Null-text inversion after Mokady et al. (CVPR 2023, Alg. 1), per image; by default the
    reduced variant described in the module docstring (source-label pivot, step-scaled schedule).

    1. Pivot: DDIM inversion at ``w = 1`` (:func:`invert_conditional`, with ``label``),
       ``z*_0 .. z*_T``. Mokady et al.'s code: ``label="destination"``.
    2. ``z_bar = z*_T``; for each sampling step ``s -> r`` (noisiest first, ``i = 0, 1, ...``),
       starting from the previous step's embedding (the null embedding at first), run up to
       ``inner_steps`` Adam steps (a fresh optimiser) on
       ``|move(z_bar, eps_w(z_bar; s, null_i), s -> r) - z*_r|^2`` (mean per element), the
       gradient flowing through the network into the embedding only; stop an image early once
       its loss after a step is below the threshold. Then ``z_bar`` takes the guided step with
       ``null_i``. Learning rate and threshold at step ``i``:

       * ``schedule="scaled"`` (default): ``lr * (1 - 0.5 i / steps)`` and
         ``early_stop_eps + 1e-3 i / steps``, equal to Mokady et al.'s at 50 steps;
       * ``schedule="reference"``: ``lr * (1 - i / 100)`` and ``early_stop_eps + 2e-5 i``,
         their code's numbers at any step count.
    3. Regenerate with ``Guidance(..., uncond_per_step=(null_0, ...), uncond_grid=grid)`` and
       :func:`cfginv_lite.ddim.sample_ddim` on the same grid: that replays step 2's ``z_bar``
       (any other grid raises ``ValueError``).

    Images are independent: the embeddings are separate leaf tensors (Adam skips those
    without a gradient), images that stopped leave the batched call. Cost per image,
    counted separately: forward = ``steps`` (pivot) + per step ``1`` (conditional branch, once)
    + inner iterations + ``1`` (the final step); backward = inner iterations. Returns the
    max over the batch. Needs a model whose ``predict_noise`` lets gradients flow when
    enabled (the digits model does).
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    inner_steps, lr, early_stop_eps = _check_null_text(z, inner_steps, lr, early_stop_eps, schedule)
    batch, steps, w = z.shape[0], len(grid) - 1, guidance.scale
    abar = model.alphas_cumprod
    cond = expand_batch(guidance.cond, batch, "conditional embeddings").detach()
    null = expand_batch(guidance.uncond, batch, "unconditional embeddings").detach().clone()
    pivot = invert_conditional(model, z, grid, cond, label=label, callback=callback, progress=progress)
    forward = torch.full((batch,), steps, dtype=torch.long)
    backward = torch.zeros(batch, dtype=torch.long)
    z_bar = pivot[-1]
    per_step: list[torch.Tensor] = []
    guard = FiniteGuard(z.device)
    for i in tqdm(range(steps), desc="null-text optimisation", disable=not progress, leave=False):
        s, r = grid[steps - i], grid[steps - i - 1]
        a_s, a_r = float(abar[s]), float(abar[r])
        target = pivot[steps - i - 1]
        with torch.no_grad():
            eps_c = model.predict_noise(z_bar, timestep_labels(s, batch, z.device), cond)
        forward += 1
        step_lr, threshold = _null_schedule(schedule, lr, early_stop_eps, i, steps)
        null, opt = _optimise_null(model, z_bar, s, (a_s, a_r), eps_c, w, target, null, inner_steps, step_lr, threshold)
        forward, backward = forward + opt["iterations"], backward + opt["iterations"]
        per_step.append(null)
        with torch.no_grad():
            eps_u = model.predict_noise(z_bar, timestep_labels(s, batch, z.device), null)
            eps = cfg_combine(eps_u, eps_c, w)
            z_next = move(z_bar, eps, a_s, a_r)
        forward += 1
        guard.update(i, z_next)
        if callback is not None:
            callback(step_info(i, steps, s, r, (s, s), z_next, z_bar, eps, forward,
                               (z_next - target).abs().flatten(1).mean(1).double(), nfe_backward=backward.clone(),
                               phase="optimise", **opt))
        z_bar = z_next
    guard.raise_if_bad("invert_null_text", grid, -1)
    regen = Guidance(cond=cond, uncond=expand_batch(guidance.uncond, batch, "unconditional embeddings"),
                     scale=w, uncond_per_step=tuple(per_step), uncond_grid=tuple(grid))
    return InversionResult(pivot[-1], regen, nfe=int(forward.max()), nfe_backward=int(backward.max()))


def _check_null_text(z: torch.Tensor, inner_steps: Any, lr: Any, early_stop_eps: Any, schedule: Any) -> tuple:
    """Null-text's options as Python numbers; latents that require grad are refused."""
    if z.requires_grad:
        raise ValueError("null-text inversion runs its own backward passes (into the null embeddings) and cannot "
                         "also build a graph through the latents, which require grad; pass latents.detach()")
    check_choice("schedule", schedule, ("scaled", "reference"))
    return (check_int("inner_steps", inner_steps, 0), check_positive("lr", lr),
            check_positive("early_stop_eps", early_stop_eps, allow_zero=True))


def _null_schedule(schedule: str, lr: float, early_stop_eps: float, i: int, steps: int) -> tuple[float, float]:
    """Learning rate and early-stop threshold at sampling step ``i`` (see :func:`invert_null_text`)."""
    if schedule == "reference":   # Mokady et al.'s code, as numbers of i
        return lr * (1.0 - i / 100.0), early_stop_eps + 2e-5 * i
    return lr * (1.0 - 0.5 * i / steps), early_stop_eps + 1e-3 * i / steps   # their numbers at 50 steps, rescaled


def _optimise_null(model: Any, z_bar: torch.Tensor, s: int, abars: tuple[float, float], eps_c: torch.Tensor,
                   w: float, target: torch.Tensor, null: torch.Tensor, inner_steps: int, step_lr: float,
                   threshold: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Step 2's inner loop at one sampling step ``s -> r``: up to ``inner_steps`` Adam steps per image.

    Returns the optimised null embeddings ``(B, L, D)`` and the record's ``residuals`` (the loss
    after each Adam step, NaN where an image had stopped), ``iterations`` and ``stopped``.
    """
    batch, (a_s, a_r) = z_bar.shape[0], abars
    params = [null[b:b + 1].clone().requires_grad_(True) for b in range(batch)]
    optimiser = torch.optim.Adam(params, lr=step_lr)
    active = torch.ones(batch, dtype=torch.bool)
    losses: list[torch.Tensor] = []  # per inner step, (B,) with NaN where an image had stopped
    evals = torch.zeros(batch, dtype=torch.long)
    for _ in range(inner_steps):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        with torch.enable_grad():
            emb = torch.cat([params[b] for b in idx.tolist()])
            eps_u = model.predict_noise(z_bar[idx], timestep_labels(s, idx.numel(), z_bar.device), emb)
            if not eps_u.requires_grad:
                raise ValueError(f"{getattr(model, 'name', 'model')}.predict_noise returns no gradient; "
                                 "null-text inversion needs gradients through the network")
            z_prev = move(z_bar[idx], cfg_combine(eps_u, eps_c[idx], w), a_s, a_r)
            loss = (z_prev - target[idx]).pow(2).flatten(1).mean(1)
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()  # a sum: each embedding gets its own image's gradient
        optimiser.step()
        loss = loss.detach().cpu()
        losses.append(torch.full((batch,), math.nan, dtype=torch.float64).index_put_((idx,), loss.double()))
        evals[idx] += 1
        active[idx[loss < threshold]] = False  # Mokady et al. test after the step
    stopped = torch.where(active, Stop.MAX_ITER, Stop.THRESHOLD) if inner_steps else torch.full_like(evals, Stop.SKIPPED)
    rows = torch.stack(losses) if losses else torch.empty(0, batch, dtype=torch.float64)
    return torch.cat([p.detach() for p in params]), dict(residuals=rows, iterations=evals, stopped=stopped)
