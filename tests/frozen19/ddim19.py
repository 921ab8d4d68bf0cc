"""FROZEN copy of cfginv_lite/ddim.py at commit fac9175 (before issue 19's redesign). Do not edit: tests/test_redesign_identity.py compares the redesigned solvers with it bit for bit."""
from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from cfginv_lite.validation import as_prompt_list, check_choice, check_real

StepCallback = Callable[[dict[str, Any]], None]
LabelConvention = Literal["source", "destination"]
#: Callback entries shaped like the latents (``(B, C, H, W)``); every other tensor a solver
#: reports is per image (``(B,)`` or ``(K, B)``) and small.
LATENT_KEYS: tuple[str, ...] = ("latent", "latent_prev", "noise")


class Stop(enum.IntEnum):
    """Why an image's refinement of a step ended (the callback's ``stopped`` codes)."""

    MAX_ITER = 0    # ran every iteration
    THRESHOLD = 1   # early stop: error below the threshold / tolerance
    DIVERGED = 2    # non-finite, or grew past divergence_factor x its best
    SKIPPED = 3     # step not refined (or 0 iterations)


# --------------------------------------------------------------------------- the DDIM move
def move(z: torch.Tensor, eps: torch.Tensor, abar_from: float, abar_to: float) -> torch.Tensor:
    """One deterministic DDIM move of ``z`` from level ``s`` to level ``r``.

    ``move(z, e, s -> r) = a_r * (z - b_s * e) / a_s + b_r * e`` (DDIM eq. 12, ``sigma=0``),
    with ``a = sqrt(abar)``, ``b = sqrt(1 - abar)``. ``abar_from``/``abar_to`` are the
    cumulative alphas of the two levels. Coefficients are formed in float64 and applied in
    the latent's dtype, so that ``move(move(z, e, s->r), e, r->s) == z`` to float precision.
    """
    a_s, a_r = math.sqrt(abar_from), math.sqrt(abar_to)
    b_s, b_r = math.sqrt(1.0 - abar_from), math.sqrt(1.0 - abar_to)
    # z * (a_r / a_s) + eps * (b_r - a_r * b_s / a_s): two coefficients, one fused expression.
    return z * (a_r / a_s) + eps * (b_r - a_r * b_s / a_s)


def predicted_x0(z: torch.Tensor, eps: torch.Tensor, abar: float) -> torch.Tensor:
    """Tweedie / DDIM estimate of the clean latent: ``x0 = (z - b_t * eps) / a_t``."""
    return (z - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)


def v_to_epsilon(v: torch.Tensor, z: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Convert a v-prediction into a noise prediction.

    With ``z = a_t x0 + b_t eps`` and ``v = a_t eps - b_t x0`` (Salimans & Ho 2022, sec. 4):
    ``eps = a_t * v + b_t * z``. ``abar`` broadcasts per batch item, shape ``(B,)``.
    """
    abar = abar.to(device=z.device, dtype=torch.float64).view(-1, *([1] * (z.ndim - 1)))
    a, b = abar.sqrt().to(z.dtype), (1.0 - abar).sqrt().to(z.dtype)
    return a * v + b * z


def epsilon_to_v(eps: torch.Tensor, z: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`v_to_epsilon`: ``v = (eps - b_t z) / a_t`` (equivalently ``a eps - b x0``)."""
    abar = abar.to(device=z.device, dtype=torch.float64).view(-1, *([1] * (z.ndim - 1)))
    a, b = abar.sqrt().to(z.dtype), (1.0 - abar).sqrt().to(z.dtype)
    return (eps - b * z) / a


def abar_at(alphas_cumprod: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``abar`` at possibly fractional labels, linearly interpolated in ``t`` (float64).

    Fractional labels arise from the ``tless`` offset; integer labels return the table value.
    Computed on the labels' device (keep a copy of the table there to avoid a transfer), so
    a v-prediction model converting its output never forces a GPU -> CPU sync.
    """
    table = alphas_cumprod.to(device=labels.device, dtype=torch.float64)
    t = labels.detach().to(torch.float64).clamp(0, len(table) - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=len(table) - 1)
    frac = t - lo.to(torch.float64)
    return table[lo] * (1 - frac) + table[hi] * frac


# --------------------------------------------------------------------------- guidance
@dataclass(frozen=True)
class Guidance:
    """Prompt embeddings and guidance scale for classifier-free guidance.

    ``cond`` and ``uncond`` are ``(B, L, D)``. ``uncond_per_step`` optionally replaces
    ``uncond`` at each *sampling* step (index 0 = noisiest step), which is how null-text
    inversion's optimised embeddings are used at regeneration; ``uncond_grid`` is the
    timestep grid they were optimised on (:func:`sample_ddim` refuses any other grid).
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    scale: float
    uncond_per_step: tuple[torch.Tensor, ...] | None = field(default=None)
    uncond_grid: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_guidance_scale(self.scale))  # numpy/tensor -> float
        if self.uncond_grid is not None and self.uncond_per_step is not None and (
                len(self.uncond_grid) != len(self.uncond_per_step) + 1):
            raise ValueError(f"{len(self.uncond_per_step)} per-step embeddings for a grid of "
                             f"{len(self.uncond_grid) - 1} steps")
        if self.cond.shape != self.uncond.shape:
            raise ValueError(
                f"conditional and unconditional embeddings differ in shape: "
                f"{tuple(self.cond.shape)} vs {tuple(self.uncond.shape)}"
            )

    def uncond_at(self, sampling_step: int | None) -> torch.Tensor:
        if self.uncond_per_step is None or sampling_step is None:
            return self.uncond
        return self.uncond_per_step[sampling_step]

    def with_scale(self, scale: float) -> "Guidance":
        return Guidance(self.cond, self.uncond, scale, self.uncond_per_step, self.uncond_grid)

    def check_grid(self, grid: Sequence[int]) -> None:
        """Per-step embeddings belong to one grid: refuse another (a shorter one would silently
        use the wrong steps' embeddings, a longer one run out of them)."""
        if self.uncond_per_step is None:
            return
        steps = len(grid) - 1
        if len(self.uncond_per_step) != steps or (self.uncond_grid is not None
                                                   and tuple(int(t) for t in grid) != self.uncond_grid):
            made_for = list(self.uncond_grid) if self.uncond_grid is not None else f"{len(self.uncond_per_step)} steps"
            raise ValueError(f"the per-step unconditional embeddings (null-text) were optimised for the grid "
                             f"{made_for}; they cannot be used on the grid {list(grid)} - regenerate on the "
                             "inversion grid")


def check_guidance_scale(scale: Any) -> float:
    """Guidance scale must be a finite, non-negative real number (a 1-element tensor is accepted)."""
    if isinstance(scale, torch.Tensor) and scale.numel() == 1 and scale.dtype != torch.bool:
        scale = scale.item()
    return check_real("guidance scale", scale, low=0.0)


def make_guidance(
    model: Any,
    prompts: Sequence[str] | str,
    scale: float,
    *,
    negative_prompts: Sequence[str] | str | None = None,
) -> Guidance:
    """Encode prompts and the unconditional (``""``, or a negative prompt) branch once."""
    scale = check_guidance_scale(scale)
    prompts = as_prompt_list(prompts)  # a plain string is one prompt, never one per character
    if negative_prompts is None:
        negative_prompts = [""] * len(prompts)
    elif isinstance(negative_prompts, str):
        negative_prompts = [negative_prompts] * len(prompts)
    else:
        negative_prompts = as_prompt_list(negative_prompts, "negative_prompts")
    if len(negative_prompts) != len(prompts):
        raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts")
    embeddings = model.encode_prompt([*negative_prompts, *prompts])
    uncond, cond = embeddings.chunk(2)
    return Guidance(cond=cond, uncond=uncond, scale=float(scale))


@dataclass
class InversionResult:
    """What every inversion method returns (the registry's entries, the baselines).

    ``latents``: the inverted noise; ``guidance``: what regeneration must use (null-text puts
    its per-step unconditional embeddings here); ``nfe``/``nfe_backward``: forward network
    evaluations and backward passes per image (one branch of one image = 1); ``seconds``:
    filled in by :func:`cfginv_lite.methods.run_method`; ``partner``/``sampler``: what an
    exact-by-construction method (:mod:`cfginv_lite.exact`) needs to regenerate exactly.
    """

    latents: torch.Tensor
    guidance: Guidance
    nfe: int
    nfe_backward: int = 0
    seconds: float = 0.0
    #: The second latent of an exact-by-construction pair (EDICT's ``y_T``, BDIA's ``z_{N-1}``), else None.
    partner: torch.Tensor | None = None
    #: The method's own regeneration sampler, ``sampler(model, latents, grid, guidance, partner=,
    #: callback=, progress=)``; None: DDIM (:func:`sample_ddim`) is the method's own sampler.
    sampler: Callable[..., torch.Tensor] | None = None

    def regenerate_own(self, model: Any, grid: Sequence[int], *, callback: StepCallback | None = None,
                       progress: bool = False) -> torch.Tensor:
        """Regenerate with the sampler the method is (meant to be) exact for: its own, or DDIM."""
        if self.sampler is None:
            return sample_ddim(model, self.latents, grid, self.guidance, callback=callback, progress=progress)
        return self.sampler(model, self.latents, grid, self.guidance, partner=self.partner, callback=callback,
                            progress=progress)


@dataclass
class NoiseEstimate:
    """Guided noise ``eps_w = eps_u + w (eps_c - eps_u)`` and its two branches."""

    guided: torch.Tensor
    uncond: torch.Tensor
    cond: torch.Tensor


def guided_noise(
    model: Any,
    latents: torch.Tensor,
    label_uncond: float | torch.Tensor,
    label_cond: float | torch.Tensor,
    guidance: Guidance,
    *,
    sampling_step: int | None = None,
) -> NoiseEstimate:
    """``eps_w(z; tu, tc) = eps(z, tu, "") + w * (eps(z, tc, prompt) - eps(z, tu, ""))``.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6). Both branches go through the
    network in **one** batched call, each with its own timestep label, because the
    ``tless`` method labels the unconditional branch differently from the conditional one.
    """
    check_guidance(guidance)
    batch = latents.shape[0]
    uncond = _expand_batch(guidance.uncond_at(sampling_step), batch, "unconditional embeddings")
    cond = _expand_batch(guidance.cond, batch, "conditional embeddings")
    labels = torch.cat([_labels(label_uncond, batch, latents.device), _labels(label_cond, batch, latents.device)])
    eps = model.predict_noise(torch.cat([latents, latents]), labels, torch.cat([uncond, cond]))
    eps_u, eps_c = eps.chunk(2)
    return NoiseEstimate(guided=eps_u + guidance.scale * (eps_c - eps_u), uncond=eps_u, cond=eps_c)


def _labels(label: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """``(B,)`` float32 labels built on ``device``: no host-to-device copy per call."""
    if isinstance(label, torch.Tensor) and label.numel() == batch and label.ndim == 1:
        return label.to(device, torch.float32)
    return torch.full((batch,), float(label), dtype=torch.float32, device=device)


def _expand_batch(emb: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if emb.shape[0] == batch:
        return emb
    if emb.shape[0] == 1:
        return emb.expand(batch, *emb.shape[1:])
    raise ValueError(f"{what} have batch {emb.shape[0]}, latents have batch {batch}")


# --------------------------------------------------------------------------- validation
def check_guidance(guidance: Any) -> Guidance:
    """A solver's ``guidance`` must be a :class:`Guidance` (from :func:`make_guidance`), not a scale or prompts."""
    if not isinstance(guidance, Guidance):
        raise ValueError(f"guidance must be a cfginv_lite.Guidance (build it with make_guidance(model, prompts, "
                         f"scale)), got {type(guidance).__name__}")
    return guidance


def check_latents(model: Any, latents: Any) -> torch.Tensor:
    """Clear errors for the wrong tensor type, dtype, shape, an empty batch or non-finite values.

    Any float dtype passes: the models cast latents to their own dtype and back.
    """
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if not latents.is_floating_point():
        raise ValueError(f"latents must be a floating-point tensor, got dtype {latents.dtype}")
    expected = tuple(model.latent_shape)
    if latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
        raise ValueError(
            f"latents must have shape (B, {', '.join(map(str, expected))}) for model "
            f"{model.name!r}, got {tuple(latents.shape)}"
        )
    if latents.shape[0] == 0:
        raise ValueError(f"latents batch is empty (shape {tuple(latents.shape)}); pass at least one latent")
    if latents.device.type == "meta":
        raise ValueError("latents are on the 'meta' device (a shape without data, e.g. from a model built with "
                         "device='meta'); create them on a real device, e.g. latents.to_empty(device='cpu') and fill "
                         "them, or model.encode(images)")
    if not torch.isfinite(latents).all():
        raise ValueError("latents contain NaN or infinite values")
    return latents


def check_grid(timesteps: Sequence[int], num_train_timesteps: int) -> list[int]:
    """A grid must be strictly increasing integer levels inside the schedule.

    Levels may be Python or numpy integers, integral floats or 0-d tensors (a tensor or an
    iterator works too); a fractional level is an error, never silently truncated.
    """
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
        raise ValueError(f"a timestep grid must be a sequence of integer levels, got {type(timesteps).__name__}")
    grid = [_grid_level(t) for t in timesteps]
    if len(grid) < 2:
        raise ValueError("a timestep grid needs at least 2 levels (steps >= 1)")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"timestep grid must be strictly increasing, got {grid}")
    if grid[0] < 0 or grid[-1] >= num_train_timesteps:
        raise ValueError(f"timestep grid must lie in [0, {num_train_timesteps - 1}], got {grid[0]}..{grid[-1]}")
    return grid


def _grid_level(t: Any) -> int:
    if isinstance(t, torch.Tensor) and t.numel() == 1:
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise ValueError(f"timestep grid levels must be integers, got {t!r}")
    if not math.isfinite(float(t)) or float(t) != int(t):
        raise ValueError(f"timestep grid levels must be integers, got {t!r} (fractional levels are not truncated)")
    return int(t)


class NonFiniteLatentError(ValueError):
    """A solver produced NaN or infinite latents (fp16 overflow, divergence)."""


class FiniteGuard:
    """Records the first step with non-finite latents *without* a host sync per step.

    The check stays on the device during the loop; :meth:`raise_if_bad` syncs once at the
    end and names the step, instead of returning a black or grey image.
    """

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.tensor(-1, device=device)

    def update(self, step: int, z: torch.Tensor) -> None:
        bad = ~torch.isfinite(z).all()
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def raise_if_bad(self, solver: str, grid: Sequence[int], direction: int) -> None:
        step = int(self.first_bad)
        if step >= 0:
            s, r = (grid[step], grid[step + 1]) if direction > 0 else (grid[-1 - step], grid[-2 - step])
            raise NonFiniteLatentError(
                f"{solver}: latents became NaN/inf at step {step} (level {s} -> {r}). "
                "In fp16 upcast the VAE/UNet to fp32, or lower the guidance scale."
            )


# --------------------------------------------------------------------------- solvers
def invert_naive(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    label: LabelConvention = "source",
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Naive DDIM inversion: ``z_{t1} = move(z_t, eps_w(z_t; l, l), t -> t1)``.

    The noise at the *destination* ``t1`` is unknown, so it is approximated by a noise
    estimate at a nearby label ``l``:

    * ``label="source"``: ``l = t`` (the original notebook, the seed).
    * ``label="destination"``: ``l = t1`` (diffusers' ``DDIMInverseScheduler`` since PR #5145;
      also Mokady et al.'s null-text code, whose ``next_step`` moves from ``t - 20`` to ``t``
      with the noise predicted at the current latent with the label ``t``, the level it moves to).

    The approximation is good when ``eps_w`` barely changes between neighbouring levels,
    which guidance scales above 1 break. Returns the latent at ``timesteps[-1]``.
    Callback dict: ``step, steps, t_from, t_to, label_uncond, label_cond, latent,
    latent_prev, noise, residual (None: unknown without an extra evaluation), nfe``.
    """
    check_choice("label", label, ("source", "destination"))
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    abar = model.alphas_cumprod
    guard = FiniteGuard(z.device)
    steps = len(grid) - 1
    nfe = 0
    for i in tqdm(range(steps), desc="DDIM inversion", disable=not progress, leave=False):
        t, t1 = grid[i], grid[i + 1]
        lab = t if label == "source" else t1
        est = guided_noise(model, z, lab, lab, guidance)
        nfe += 2
        z_next = move(z, est.guided, float(abar[t]), float(abar[t1]))
        guard.update(i, z_next)
        if callback is not None:
            callback(dict(step=i, steps=steps, t_from=t, t_to=t1, label_uncond=lab, label_cond=lab,
                          latent=z_next, latent_prev=z, noise=est.guided, residual=None, nfe=nfe))
        z = z_next
    guard.raise_if_bad("invert_naive", grid, +1)
    return z


def sample_ddim(
    model: Any,
    latents: torch.Tensor,
    timesteps: Sequence[int],
    guidance: Guidance,
    *,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Deterministic DDIM sampling (``eta = 0``) down the ascending grid ``timesteps``.

    Step ``i`` moves ``s = ts[-1-i] -> r = ts[-2-i]`` with ``eps_w(z_s; s, s)``; with null-text
    embeddings ``guidance.uncond_per_step[i]`` replaces the unconditional embedding; they
    must have been optimised on this grid (``ValueError`` otherwise). Returns the latent at level ``timesteps[0]`` (level 0: the clean latent).
    """
    z = check_latents(model, latents)
    grid = check_grid(timesteps, len(model.alphas_cumprod))
    check_guidance(guidance).check_grid(grid)
    abar = model.alphas_cumprod
    guard = FiniteGuard(z.device)
    steps = len(grid) - 1
    nfe = 0
    for i in tqdm(range(steps), desc="DDIM sampling", disable=not progress, leave=False):
        s, r = grid[steps - i], grid[steps - i - 1]
        est = guided_noise(model, z, s, s, guidance, sampling_step=i)
        nfe += 2
        z_next = move(z, est.guided, float(abar[s]), float(abar[r]))
        guard.update(i, z_next)
        if callback is not None:
            callback(dict(step=i, steps=steps, t_from=s, t_to=r, label_uncond=s, label_cond=s,
                          latent=z_next, latent_prev=z, noise=est.guided, residual=None, nfe=nfe))
        z = z_next
    guard.raise_if_bad("sample_ddim", grid, -1)
    return z
