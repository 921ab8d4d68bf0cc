"""The embedded model: a tiny, Stable-Diffusion-shaped text-to-image model of digits.

* A word-level text encoder (fixed vocabulary, learned token + position embeddings, one
  transformer layer) whose output feeds the UNet's cross-attention the way CLIP's does.
  The empty prompt (all padding) is the unconditional branch.
* A diffusers :class:`UNet2DConditionModel` (cross-attention conditioned, ~1M parameters)
  on 1x8x8 "latents" (the dataset's native resolution), trained with epsilon prediction on the SD 1.x noise schedule.
* ``encode``/``decode`` are the identity (a fixed scaling of 1): pixels are the latents,
  so inversion errors are visible directly, without a VAE in between.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..validation import as_prompt_list, batch_labels, check_image_batch
from ..devices import resolve_device
from ..schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: ``load_model("digits-split")``: trained with ``--holdout-per-digit 50`` (1,297 of the 1,797 digits)
SPLIT_WEIGHTS_DIR = WEIGHTS_DIR / "digits_split"
#: The files a weights folder holds (written by :meth:`DigitsModel.save`).
WEIGHT_FILES: tuple[str, ...] = ("digits.safetensors", "digits.json")

PAD = "<pad>"
VOCABULARY: tuple[str, ...] = (
    PAD, "a", "an", "the", "handwritten", "digit", "number", "of",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)
MAX_TOKENS = 8


class WordTokenizer:
    """Lower-cases, splits on whitespace, maps words to ids, pads to ``MAX_TOKENS``."""

    def __init__(self, vocabulary: Sequence[str] = VOCABULARY, max_tokens: int = MAX_TOKENS) -> None:
        self.vocabulary = tuple(vocabulary)
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.max_tokens = max_tokens

    def __call__(self, prompts: Sequence[str] | str) -> torch.Tensor:
        prompts = as_prompt_list(prompts)  # a string is one prompt; None, bytes, sets: a clear error
        rows = []
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise ValueError(f"prompts must be strings, got {type(prompt).__name__}")
            words = prompt.lower().split()
            unknown = [w for w in words if w not in self.index or w == PAD]
            if unknown:
                known = ", ".join(w for w in self.vocabulary if w != PAD)
                raise ValueError(f"unknown word(s) {unknown} in prompt {prompt!r}; the digits model knows: {known}")
            if len(words) > self.max_tokens:
                raise ValueError(f"prompt {prompt!r} has {len(words)} words; at most {self.max_tokens}")
            ids = [self.index[w] for w in words] + [0] * (self.max_tokens - len(words))
            rows.append(ids)
        return torch.tensor(rows, dtype=torch.long)


class TinyTextEncoder(nn.Module):
    """Token + position embeddings and one pre-norm transformer layer -> ``(B, L, D)``."""

    def __init__(self, vocab_size: int = len(VOCABULARY), max_tokens: int = MAX_TOKENS, dim: int = 32) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(max_tokens, dim))
        self.layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=2 * dim, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layer(self.token(ids) + self.position))


def unet_config(size: int = 8, text_dim: int = 32) -> dict[str, Any]:
    """Config of the digits UNet: SD's block types, scaled down (~1M parameters).

    8x8 is the dataset's native resolution. Measured on 2 CPU cores: a training step at
    batch 128 takes 0.27 s at 8x8 against 0.62-1.15 s for 16x16 variants, and a batched
    guided call on 20 images 0.041 s against 0.094-0.126 s; upsampling adds no information.
    """
    return dict(
        sample_size=size, in_channels=1, out_channels=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=text_dim,
        attention_head_dim=8, norm_num_groups=16,
    )


def build_networks(size: int = 8, text_dim: int = 32) -> tuple[TinyTextEncoder, nn.Module]:
    from diffusers import UNet2DConditionModel

    return TinyTextEncoder(dim=text_dim), UNet2DConditionModel(**unet_config(size, text_dim))


class DigitsModel:
    """The digits model behind the :class:`~cfginv_lite.models.protocol.DiffusionModel` protocol."""

    name = "digits"

    def __init__(self, text_encoder: TinyTextEncoder, unet: nn.Module, *, size: int = 8,
                 scheduler_config: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)  # one clear error for "bogus" or CUDA without a GPU
        self.dtype = torch.float32
        self.size = size
        self.latent_shape = (1, size, size)
        self.scheduler_config = dict(SD1_SCHEDULER_CONFIG if scheduler_config is None else scheduler_config)
        self.alphas_cumprod = alphas_cumprod_from_config(self.scheduler_config)
        self.tokenizer = WordTokenizer()
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        self.unet = unet.to(self.device).eval().requires_grad_(False)

    # The protocol -------------------------------------------------------------------
    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``(B, 1, S, S)`` in ``[-1, 1]`` are their own latents (scaling factor 1).

        Checked exactly as Stable Diffusion checks its images (:func:`cfginv_lite.validation.check_image_batch`):
        pixels in ``[0, 255]`` or integer dtypes are refused instead of inverted into nonsense.
        """
        if isinstance(images, torch.Tensor) and images.ndim == 4 and tuple(images.shape[1:]) != self.latent_shape:
            raise ValueError(f"digits images must be a tensor (B, 1, {self.size}, {self.size}) in [-1, 1], "
                             f"got {tuple(images.shape)}")
        images = check_image_batch(images, channels=1, what=f"digits images (B, 1, {self.size}, {self.size})")
        return images.to(self.device, self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The identity, clamped to ``[-1, 1]``."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or tuple(latents.shape[1:]) != self.latent_shape:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor (B, 1, {self.size}, {self.size}), got {shape}")
        return latents.clamp(-1, 1)

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.text_encoder(self.tokenizer(prompts).to(self.device))

    def predict_noise(self, latents: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``eps(z, t, c)``, computed in ``self.dtype`` and returned in the dtype of ``latents``.

        Latents of any float dtype (float64, float16, bfloat16) are cast in and out, exactly as
        :class:`~cfginv_lite.models.stable_diffusion.StableDiffusionModel` does.
        """
        batch = latents.shape[0]
        labels = batch_labels(labels, batch)
        # Gradients flow only when a caller enables them (null-text inversion does).
        out = self.unet(latents.to(self.device, self.dtype), labels.to(self.device),
                        encoder_hidden_states=embeddings.to(self.device, self.dtype)).sample
        return out.to(latents.dtype)

    # Persistence --------------------------------------------------------------------
    def save(self, directory: str | Path, *, metadata: dict[str, Any] | None = None,
             overwrite: bool = False) -> Path:
        """Write ``digits.safetensors`` (float32, ~4 MB) and ``digits.json`` to ``directory``.

        Refuses (``FileExistsError``) to replace existing files, or the package's shipped
        weights folder, unless ``overwrite=True``: a stray call must not replace the weights
        every notebook loads. Files are written atomically.
        """
        from safetensors.torch import save_file

        from ..outputs import OutputPathError, check_output_dir, write_atomic, write_text_atomic

        try:
            directory = check_output_dir(directory, WEIGHT_FILES, what="weights folder", force=overwrite,
                                         protected=(WEIGHTS_DIR,))
        except OutputPathError as err:
            raise FileExistsError(str(err).replace("pass --force", "pass overwrite=True")) from None
        directory.mkdir(parents=True, exist_ok=True)
        state = {f"text_encoder.{k}": v for k, v in self.text_encoder.state_dict().items()}
        state |= {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
        write_atomic(directory / "digits.safetensors", lambda tmp: save_file(tensors, tmp))
        info = {"size": self.size, "scheduler_config": self.scheduler_config, **(metadata or {})}
        write_text_atomic(directory / "digits.json", json.dumps(info, indent=2) + "\n")
        return directory / "digits.safetensors"


def load_digits_model(device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR) -> DigitsModel:
    """Load the digits weights (offline, float32): the shipped ones, or a trainer's ``weights_dir``."""
    from safetensors.torch import load_file

    device = resolve_device(device)  # before reading 4 MB: a bad device fails first, in one line
    weights_dir = Path(weights_dir)
    path = weights_dir / "digits.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"no digits weights at {path}; train them with `python -m cfginv_lite.models.train_digits`"
        )
    try:
        info = json.loads((weights_dir / "digits.json").read_text())
        size, scheduler_config = int(info["size"]), dict(info["scheduler_config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(weights_dir / 'digits.json')!r} is missing or not a digits weights description "
                         f"({type(err).__name__}: {err}); it is written next to digits.safetensors by the trainer") from None
    if not (4 <= size <= 64 and size % 2 == 0):
        raise ValueError(f"{str(weights_dir / 'digits.json')!r} gives size {size}; the digits model needs an even "
                         "size in [4, 64] (the trainer writes the size it trained at)")
    retrain = "copy it again, or train new weights with `python -m cfginv_lite.models.train_digits`"
    try:
        raw = load_file(path)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 (SafetensorError: truncated, empty, not a safetensors file)
        raise ValueError(f"{str(path)!r} is not a complete safetensors file ({err}); an interrupted copy or "
                         f"download truncates it: {retrain}") from None
    state = {k: v.to(torch.float32) for k, v in raw.items()}
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{str(path)!r} holds NaN/inf values in {len(bad)} tensor(s) (e.g. {bad[0]!r}): weights of a "
                         f"diverged training run; {retrain} (a smaller --lr)")
    text_encoder, unet = build_networks(size)
    try:
        text_encoder.load_state_dict({k[len("text_encoder."):]: v for k, v in state.items()
                                      if k.startswith("text_encoder.")})
        unet.load_state_dict({k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")})
    except RuntimeError as err:  # missing/unexpected keys, size mismatches: torch's message spans many lines
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise ValueError(f"{str(path)!r} does not hold the weights of the digits model its digits.json describes "
                         f"(size {size}): {detail[:300]}; {retrain}") from None
    return DigitsModel(text_encoder, unet, size=size, scheduler_config=scheduler_config, device=device)
