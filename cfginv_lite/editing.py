"""Editing real images: invert with one prompt, regenerate with another.

Why inversion has to work at high guidance: an edit is a regeneration from the inverted
noise with a *changed* prompt, and the change only takes at a high guidance scale. Three
ways to regenerate are provided, all on the DDIM grid of the inversion:

* plain prompt swap: :func:`edit` with ``tau=0`` (sample the inverted noise with the new prompt);
* prompt-to-prompt word swap (Hertz et al., "Prompt-to-Prompt Image Editing with Cross
  Attention Control", ICLR 2023, sec. 3.2, "word swap"): source and edit are sampled side
  by side in one batched call, and for the first fraction ``tau`` of the sampling steps the
  edit's cross-attention maps ``M*_t`` are replaced by the source's ``M_t``
  (their ``Edit(M_t, M*_t, t) = M_t if t < tau else M*_t``; all maps, or only the changed
  word's columns with ``tokens``). The source row follows the plain reconstruction of the
  inverted noise, so with an unchanged prompt the edit *is* the reconstruction;
* partial inversion (``start_step``, as in the Hugging Face diffusion course's DDIM
  inversion notebook): invert only up to an intermediate level (:func:`partial_grid`) and
  regenerate from there with the new prompt, keeping the low-noise structure of the image.

Attention control goes through diffusers' public attention-processor API:
:func:`attention_control` installs :class:`WordSwapAttention` with
``unet.set_attn_processor`` and restores the previous processors afterwards. It works for
every model in the package with a diffusers ``unet`` (the digits model, Stable Diffusion).

How much of the source's style an edit keeps is measured in :mod:`cfginv_lite.style_metrics`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .ddim import move
from .exact import bdia_step, check_bdia_gamma
from .guidance import Guidance, cfg_combine, check_guidance, expand_batch
from .records import StepCallback, step_info
from .validation import FiniteGuard, as_prompt_list, check_fraction, check_grid, check_int, check_latents


# --------------------------------------------------------------------------- attention control
@dataclass
class SwapState:
    """What :class:`WordSwapAttention` reads at every call; the sampler sets ``active`` per step.

    ``batch``: images per group; the network's batch is 4 groups ``[uncond source, uncond
    edit, cond source, cond edit]`` of ``batch`` rows each. ``tokens``: ``None`` (replace
    every token's map) or a bool mask ``(L,)`` / ``(batch, L)`` of the token columns to take
    from the source. ``calls``: cross-attention calls that replaced maps (for tests).
    """

    batch: int
    active: bool = False
    tokens: torch.Tensor | None = None
    calls: int = 0


class WordSwapAttention:
    """Attention processor for prompt-to-prompt word swap (Hertz et al. 2023, sec. 3.2).

    Self-attention, and cross-attention while ``state.active`` is false, go to the layer's
    previous processor unchanged. Otherwise it computes attention as diffusers'
    ``AttnProcessor`` does (``softmax(Q K^T / sqrt(d)) V``), after replacing the
    probabilities of the *conditional edit* rows by those of the *conditional source* rows
    (prompt-to-prompt controls the conditional half of the guided batch only).
    """

    def __init__(self, state: SwapState, previous: Any) -> None:
        self.state, self.previous = state, previous

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is None or not self.state.active:
            return self.previous(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b4, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(b4, channel, height * width).transpose(1, 2)
        b4, seq, _ = encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, seq, b4)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, attention_mask)
        probs = self.replace(probs, attn.heads)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b4, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def replace(self, probs: torch.Tensor, heads: int) -> torch.Tensor:
        """``probs`` ``(4 B heads, Q, L)`` -> the same with cond-edit rows taken from cond-source."""
        n = self.state.batch
        if probs.shape[0] != 4 * n * heads:
            raise ValueError(f"WordSwapAttention expects a batch of 4 x {n} (uncond/cond x source/edit), "
                             f"got {probs.shape[0] // heads}")
        groups = probs.view(4, n, heads, *probs.shape[1:])
        src, dst = groups[2], groups[3]
        mask = self.state.tokens
        if mask is None:
            new = src
        else:
            mask = mask.to(probs.device).view(-1 if mask.ndim == 2 else 1, 1, 1, mask.shape[-1])
            new = torch.where(mask, src, dst)
        self.state.calls += 1
        return torch.cat([groups[:3], new.unsqueeze(0)]).view_as(probs)


def _unet(model: Any) -> Any:
    unet = getattr(model, "unet", None)
    unet = getattr(unet, "_orig_mod", unet)  # a torch.compile'd UNet: its module
    if unet is None or not hasattr(unet, "set_attn_processor"):
        raise ValueError(f"model {getattr(model, 'name', type(model).__name__)!r} has no diffusers UNet "
                         "(unet.set_attn_processor); attention control needs one")
    return unet


@contextlib.contextmanager
def attention_control(model: Any, state: SwapState) -> Iterator[SwapState]:
    """Install :class:`WordSwapAttention` on every attention layer of ``model.unet``; restore on exit.

    Uses only ``unet.attn_processors`` and ``unet.set_attn_processor`` (diffusers' public API);
    the previous processors are put back even if sampling raises.
    """
    unet = _unet(model)
    previous = dict(unet.attn_processors)
    unet.set_attn_processor({name: WordSwapAttention(state, proc) for name, proc in previous.items()})
    try:
        yield state
    finally:
        unet.set_attn_processor(previous)


def changed_tokens(model: Any, source_prompts: Sequence[str] | str, target_prompts: Sequence[str] | str) -> torch.Tensor:
    """Bool mask ``(B, L)`` of the token positions where the two prompts' token ids differ.

    For a word swap ("... digit three" -> "... digit eight") that is the swapped word; pass
    it as ``tokens=`` to :func:`edit` to replace only that word's maps. Works with the digits
    model's word tokenizer and with a Hugging Face (CLIP) tokenizer.
    """
    src, dst = as_prompt_list(source_prompts, "source_prompts"), as_prompt_list(target_prompts, "target_prompts")
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} source prompts for {len(dst)} target prompts")
    tok = model.tokenizer
    ids = []
    for prompts in (src, dst):
        out = tok(prompts)
        if not isinstance(out, torch.Tensor):  # a Hugging Face tokenizer
            out = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
        ids.append(out)
    return ids[0] != ids[1]


# --------------------------------------------------------------------------- the edit sampler
@dataclass
class EditResult:
    """``edited``: the edit's clean latent; ``reconstructed``: the source row (the plain
    reconstruction of the inverted noise, computed in the same batched calls)."""

    edited: torch.Tensor
    reconstructed: torch.Tensor


def partial_grid(grid: Sequence[int], start_step: int) -> list[int]:
    """The grid of a partial inversion that stops ``start_step`` sampling steps short of the top.

    Inverting on ``partial_grid(grid, k)`` gives the latent at level ``grid[-1-k]``; pass it
    to :func:`edit` with the full ``grid`` and ``start_step=k`` (the Hugging Face course's
    ``sample(start_step=k, latents=inverted_latents[-(k + 1)])``).
    """
    grid = list(grid)
    k = check_int("start_step", start_step, 0, len(grid) - 2)
    return grid[:len(grid) - k]


@torch.no_grad()
def edit(
    model: Any,
    noise: torch.Tensor,
    grid: Sequence[int],
    guidance: Guidance,
    target: Sequence[str] | str | torch.Tensor,
    *,
    tau: float = 0.0,
    tokens: torch.Tensor | None = None,
    start_step: int = 0,
    partner: torch.Tensor | None = None,
    gamma: float = 1.0,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> EditResult:
    """Regenerate inverted ``noise`` with the ``target`` prompt, prompt-to-prompt for a fraction ``tau``.

    ``guidance`` is what the inversion returned (its ``cond`` is the source prompt; null-text's
    per-step unconditional embeddings and negative-prompt's source-as-unconditional are used
    for both rows, as Mokady et al. 2023 do when they edit with prompt-to-prompt). ``target``: prompts, or their
    embeddings ``(B|1, L, D)``. Per sampling step ``i`` (noisiest first) one batched call
    evaluates ``[uncond, uncond, source, target]`` on ``[z_src, z_edit, z_src, z_edit]`` and
    both rows take a DDIM step (DDIM eq. 12, ``sigma = 0``) with their own guided noise
    ``eps_u + w (eps_c - eps_u)``. For the first ``round(tau * n)`` of the ``n`` steps run,
    the edit's cross-attention probabilities are the source's (Hertz et al. 2023, sec. 3.2):
    all of them, or only the columns in ``tokens`` (see :func:`changed_tokens`).

    ``tau = 0`` is the plain prompt swap; an unchanged prompt reproduces the reconstruction
    (``sample_ddim(noise, guidance)``) whatever ``tau`` is. ``start_step = k`` starts from a
    partial inversion at level ``grid[-1-k]`` (:func:`partial_grid`) and runs the last
    ``n = len(grid) - 1 - k`` steps. Callback keys: those of :func:`cfginv_lite.ddim.sample_ddim`
    (``latent``: the edit row) plus ``source`` (the source row) and ``replaced`` (bool).

    ``partner``: edit a BDIA inversion (:func:`cfginv_lite.exact.invert_bdia` returns the pair
    ``(z_N, z_{N-1})``; pass ``noise=z_N, partner=z_{N-1}`` and its ``gamma``). Both rows then
    take BDIA's sampling step (Zhang et al. 2024; :func:`cfginv_lite.exact.bdia_step`, the step of
    :func:`~cfginv_lite.exact.sample_bdia`) instead of DDIM's, the sampler that pair is exact for,
    over the ``N - 1`` steps below ``z_{N-1}``; ``tau`` counts those steps. ``start_step`` must then be 0.
    """
    z = check_latents(model, noise)
    grid = check_grid(grid, len(model.alphas_cumprod))
    check_guidance(guidance).check_grid(grid)
    tau, steps, batch = check_fraction("tau", tau), len(grid) - 1, z.shape[0]
    start_step = check_int("start_step", start_step, 0, steps - 1)
    source_emb, target_emb = _edit_embeddings(model, guidance, target, tokens, batch)
    bdia = partner is not None
    gamma = _check_bdia_pair(z, partner, gamma, start_step) if bdia else gamma
    first = 1 if bdia else start_step                  # BDIA: the pair already holds the top step
    n_replace = int(math.floor(tau * (steps - first) + 0.5))
    abar, state, guard = model.alphas_cumprod, SwapState(batch=batch, tokens=tokens), FiniteGuard(z.device)
    up_src = up_edit = z                               # BDIA keeps the state one step further up
    z_src = z_edit = partner.to(z.dtype) if bdia else z
    with attention_control(model, state):
        for i in tqdm(range(first, steps), desc="BDIA editing" if bdia else "DDIM editing", disable=not progress,
                      leave=False):
            s, r = grid[steps - i], grid[steps - i - 1]
            uncond = expand_batch(guidance.uncond_at(i), batch, "unconditional embeddings")
            state.active = (i - first) < n_replace
            labels = torch.full((4 * batch,), float(s), dtype=torch.float32, device=z.device)
            eps = model.predict_noise(torch.cat([z_src, z_edit, z_src, z_edit]), labels,
                                      torch.cat([uncond, uncond, source_emb, target_emb]))
            eu_src, eu_edit, ec_src, ec_edit = eps.chunk(4)
            eps_src, eps_edit = cfg_combine(eu_src, ec_src, guidance.scale), cfg_combine(eu_edit, ec_edit, guidance.scale)
            a_s, a_r = float(abar[s]), float(abar[r])
            if bdia:   # BDIA's step (the sampler the pair is exact for), from the state one step further up
                a_up = float(abar[grid[steps - i + 1]])
                src_next = bdia_step(z_src, up_src, eps_src, a_s, a_r, a_up, gamma)
                edit_next = bdia_step(z_edit, up_edit, eps_edit, a_s, a_r, a_up, gamma)
                up_src, up_edit = z_src, z_edit
            else:      # DDIM's step (eq. 12, sigma = 0)
                src_next, edit_next = move(z_src, eps_src, a_s, a_r), move(z_edit, eps_edit, a_s, a_r)
            guard.update(i, edit_next)
            if callback is not None:
                callback(step_info(i, steps, s, r, (s, s), edit_next, z_edit, eps_edit, 2 * (i - first + 1),
                                   source=src_next, replaced=state.active))
            z_src, z_edit = src_next, edit_next
        state.active = False
    guard.raise_if_bad("edit", grid, -1)
    return EditResult(edited=z_edit, reconstructed=z_src)


def _edit_embeddings(model: Any, guidance: Guidance, target: Sequence[str] | str | torch.Tensor,
                     tokens: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The source (``guidance.cond``) and target embeddings, one per image; checks ``tokens``."""
    if isinstance(target, torch.Tensor):
        target_emb = target.to(model.device)
    else:
        prompts = as_prompt_list(target, "target")
        if len(prompts) not in (1, batch):
            raise ValueError(f"{len(prompts)} target prompts for {batch} images")
        target_emb = model.encode_prompt(prompts)
    target_emb = expand_batch(target_emb, batch, "target embeddings")
    source_emb = expand_batch(guidance.cond, batch, "conditional embeddings")
    if target_emb.shape[1:] != source_emb.shape[1:]:
        raise ValueError(f"target embeddings {tuple(target_emb.shape[1:])} differ in shape from the source's "
                         f"{tuple(source_emb.shape[1:])}")
    if tokens is not None:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.bool or tokens.ndim not in (1, 2) or (
                tokens.shape[-1] != source_emb.shape[1]) or (tokens.ndim == 2 and tokens.shape[0] != batch):
            raise ValueError(f"tokens must be a bool mask (L,) or (B, L) with L = {source_emb.shape[1]}, B = {batch}")
    return source_emb, target_emb


def _check_bdia_pair(z: torch.Tensor, partner: Any, gamma: Any, start_step: int) -> float:
    """A BDIA pair to edit: a partner shaped like the noise, BDIA's gamma, and the whole grid."""
    if start_step:
        raise ValueError("start_step must be 0 when editing a BDIA pair (partner=...)")
    gamma = check_bdia_gamma(gamma)
    if not isinstance(partner, torch.Tensor) or partner.shape != z.shape:
        raise ValueError(f"partner must be a tensor shaped like noise {tuple(z.shape)}, got "
                         f"{tuple(partner.shape) if isinstance(partner, torch.Tensor) else type(partner).__name__}")
    return gamma


__all__ = ["EditResult", "SwapState", "WordSwapAttention", "attention_control", "changed_tokens", "edit",
           "partial_grid"]
