"""Test fixtures: a tiny, random-weight Stable Diffusion and its tokenizer, built offline.

Not a model to use: it has SD's architecture (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel, CLIPTokenizer) at tiny widths and random weights, so tests, the notebooks'
CPU fallback and the benchmark's smoke test exercise the real code paths in seconds,
without downloading anything.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..schedule import SD1_SCHEDULER_CONFIG
from .stable_diffusion import PREDICTION_TYPES, StableDiffusionModel


def tiny_unet_config(image_size: int = 64, cross_attention_dim: int = 32) -> dict[str, Any]:
    """SD's UNet block types with tiny channels (a few hundred thousand parameters)."""
    return dict(
        sample_size=image_size // 8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=16,
    )


def tiny_vae_config(image_size: int = 64, scaling_factor: float = 0.18215) -> dict[str, Any]:
    """SD's AutoencoderKL layout with tiny channels: 4 blocks, hence SD's downsample factor 8."""
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
        sample_size=image_size, scaling_factor=scaling_factor,
    )


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte -> printable-character table (the alphabet of its byte-level BPE)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    extra = 0
    for b in range(256):
        if b not in bs:  # unprintable bytes map to code points 256, 257, ...
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


_TINY_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "o f</w>", "p h", "ph o")


def build_tiny_tokenizer(directory: str | os.PathLike[str] | None = None, model_max_length: int = 77) -> Any:
    """A real ``CLIPTokenizer`` from a tiny byte-level vocab written to ``directory`` (no download)."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m.split()) for m in _TINY_MERGES)]
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    with contextlib.ExitStack() as stack:
        folder = Path(directory) if directory is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_TINY_MERGES) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=model_max_length, local_files_only=True)


def build_tiny_stable_diffusion(seed: int = 0, image_size: int = 64, prediction_type: str = "epsilon", *,
                                scaling_factor: float = 0.18215,
                                dtype: torch.dtype = torch.float32) -> StableDiffusionModel:
    """Random-weight Stable Diffusion of the real architecture, tiny, built offline (CPU, fp32).

    UNet2DConditionModel, AutoencoderKL, CLIPTextModel and CLIPTokenizer exactly as SD uses
    them, with tiny widths; SD 1.x scheduler config with ``prediction_type`` overridden. The
    same ``seed`` gives bitwise-identical weights (the global RNG is left untouched).
    ``dtype=torch.float64`` runs every network in double precision: identity checks between two
    code paths (e.g. bmm vs SDPA attention) then hold to ~1e-12 on any CPU instead of to a
    float32 rounding difference that depends on the CPU's vector unit.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config)
        vae = AutoencoderKL(**tiny_vae_config(image_size, scaling_factor))
        unet = UNet2DConditionModel(**tiny_unet_config(image_size, text_config.hidden_size))
    scheduler_config = {**SD1_SCHEDULER_CONFIG, "prediction_type": prediction_type}
    return StableDiffusionModel(unet, vae, text_encoder, tokenizer, scheduler_config, "cpu", dtype, image_size,
                                vae_dtype=dtype)


__all__ = ["build_tiny_stable_diffusion", "build_tiny_tokenizer", "tiny_unet_config", "tiny_vae_config"]
