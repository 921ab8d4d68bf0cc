"""mini-sd: a second embedded model, built like Stable Diffusion, on MNIST digits.

Where the digits model diffuses pixels, mini-sd is a *latent* diffusion model as SD is
(Rombach et al. 2022, sec. 3):

* a learned :class:`diffusers.AutoencoderKL` (1 channel in, 4-channel latent, 4x
  downsampling: 32x32 padded MNIST -> 4x8x8 latents), its latents scaled by a factor
  computed as SD's was (``1 / std`` of the training latents, Rombach et al. sec. G);
* the house word-level text encoder and tokenizer (:mod:`cfginv_lite.models.digits`)
  feeding the cross-attention of
* a small :class:`diffusers.UNet2DConditionModel` on the latents, epsilon prediction on the
  SD 1.x schedule (:data:`cfginv_lite.schedule.SD1_SCHEDULER_CONFIG`).

It is trained on the 4,000-image training split of :mod:`cfginv_lite.mnist`; its "real
digits" are the 1,000 held-out images it never saw
(``python -m cfginv_lite.models.train_mini_sd``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..devices import resolve_device
from ..schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config
from ..validation import batch_labels, check_image_batch
from .digits import WEIGHTS_DIR, TinyTextEncoder, WordTokenizer

WEIGHT_FILES: tuple[str, ...] = ("mini_sd.safetensors", "mini_sd.json")
IMAGE_SIZE, LATENT_SIZE, LATENT_CHANNELS, TEXT_DIM = 32, 8, 4, 32


def vae_config() -> dict[str, Any]:
    """AutoencoderKL, SD's block types scaled down: two 2x downsamplings (32 -> 8), 4 latent channels."""
    return dict(in_channels=1, out_channels=1, latent_channels=LATENT_CHANNELS, sample_size=IMAGE_SIZE,
                down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8)


def unet_config() -> dict[str, Any]:
    """The latent UNet: SD's cross-attention block types on 4x8x8 latents (sizes chosen by timing, see the trainer)."""
    return dict(sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=TEXT_DIM,
                attention_head_dim=8, norm_num_groups=16)


def build_networks() -> tuple[nn.Module, TinyTextEncoder, nn.Module]:
    """Fresh (untrained) ``(vae, text_encoder, unet)``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    return AutoencoderKL(**vae_config()), TinyTextEncoder(dim=TEXT_DIM), UNet2DConditionModel(**unet_config())


class MiniSDModel:
    """The mini-sd model behind the :class:`~cfginv_lite.models.protocol.DiffusionModel` protocol."""

    name = "mini-sd"

    def __init__(self, vae: nn.Module, text_encoder: TinyTextEncoder, unet: nn.Module, *,
                 scaling_factor: float, scheduler_config: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> None:
        scaling_factor = float(scaling_factor)
        if not (scaling_factor > 0 and scaling_factor < float("inf")):
            raise ValueError(f"scaling_factor must be a positive finite number, got {scaling_factor}")
        self.device = resolve_device(device)
        self.dtype = torch.float32
        self.size = IMAGE_SIZE
        self.latent_shape = (LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
        self.scaling_factor = scaling_factor
        self.scheduler_config = dict(SD1_SCHEDULER_CONFIG if scheduler_config is None else scheduler_config)
        self.alphas_cumprod = alphas_cumprod_from_config(self.scheduler_config)
        self.tokenizer = WordTokenizer()
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        self.unet = unet.to(self.device).eval().requires_grad_(False)

    # The protocol -------------------------------------------------------------------
    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``(B, 1, 32, 32)`` in ``[-1, 1]`` -> latents ``(B, 4, 8, 8)``.

        The VAE posterior's mean times the scaling factor (SD's convention for inversion);
        with a ``generator``, a sample of the posterior instead (SD's training convention).
        """
        if isinstance(images, torch.Tensor) and images.ndim == 4 and tuple(images.shape[1:]) != (1, self.size, self.size):
            raise ValueError(f"mini-sd images must be a tensor (B, 1, {self.size}, {self.size}) in [-1, 1] "
                             f"(MNIST padded to 32, see cfginv_lite.mnist), got {tuple(images.shape)}")
        images = check_image_batch(images, channels=1, what=f"mini-sd images (B, 1, {self.size}, {self.size})")
        with torch.no_grad():
            dist = self.vae.encode(images.to(self.device, torch.float32)).latent_dist
            z = dist.mean if generator is None else dist.sample(generator=generator)
        return (z * self.scaling_factor).to(self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``vae.decode(latents / scaling_factor)`` clamped to ``[-1, 1]``, in the dtype of ``latents``."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or tuple(latents.shape[1:]) != self.latent_shape:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor (B, {', '.join(map(str, self.latent_shape))}), got {shape}")
        with torch.no_grad():
            images = self.vae.decode(latents.to(self.device, torch.float32) / self.scaling_factor).sample
        return images.clamp(-1, 1).to(latents.dtype)

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.text_encoder(self.tokenizer(prompts).to(self.device))

    def predict_noise(self, latents: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``eps(z, t, c)`` in one batched UNet call; computed in ``self.dtype``, returned in the dtype of ``latents``."""
        labels = batch_labels(labels, latents.shape[0])  # fractional labels allowed (tless)
        out = self.unet(latents.to(self.device, self.dtype), labels.to(self.device),
                        encoder_hidden_states=embeddings.to(self.device, self.dtype)).sample
        return out.to(latents.dtype)

    # Persistence --------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        parts = (("vae", self.vae), ("text_encoder", self.text_encoder), ("unet", self.unet))
        return {f"{n}.{k}": v for n, m in parts for k, v in m.state_dict().items()}

    def save(self, directory: str | Path, *, metadata: dict[str, Any] | None = None, overwrite: bool = False,
             dtype: torch.dtype = torch.float16) -> Path:
        """Write ``mini_sd.safetensors`` (float16 by default) and ``mini_sd.json`` atomically.

        Refuses (``FileExistsError``) existing files and the package's shipped weights folder
        unless ``overwrite=True``, and (``ValueError``) weights with NaN/inf values.
        """
        from safetensors.torch import save_file

        from ..outputs import OutputPathError, check_output_dir, write_atomic, write_text_atomic

        tensors = {k: v.detach().to("cpu", torch.float32) for k, v in self.state().items()}
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"refusing to save non-finite weights ({len(bad)} tensors, e.g. {bad[0]})")
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"weights overflow {dtype} ({bad[0]}); save with dtype=torch.float32")
        try:
            directory = check_output_dir(directory, WEIGHT_FILES, what="weights folder", force=overwrite,
                                         protected=(WEIGHTS_DIR,))
        except OutputPathError as err:
            raise FileExistsError(str(err).replace("pass --force", "pass overwrite=True")) from None
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / WEIGHT_FILES[0], lambda tmp: save_file(tensors, tmp))
        info = {"scaling_factor": self.scaling_factor, "weights_dtype": str(dtype).replace("torch.", ""),
                "vae_config": vae_config(), "unet_config": unet_config(),
                "scheduler_config": self.scheduler_config, **(metadata or {})}
        write_text_atomic(directory / WEIGHT_FILES[1], json.dumps(info, indent=2) + "\n")
        return directory / WEIGHT_FILES[0]


def load_mini_sd_model(device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR) -> MiniSDModel:
    """Load the mini-sd weights (offline; stored in float16, run in float32)."""
    from safetensors.torch import load_file

    device = resolve_device(device)
    weights_dir = Path(weights_dir)
    path = weights_dir / WEIGHT_FILES[0]
    if not path.is_file():
        raise FileNotFoundError(f"no mini-sd weights at {path}; train them with "
                                "`python -m cfginv_lite.models.train_mini_sd`")
    try:
        info = json.loads((weights_dir / WEIGHT_FILES[1]).read_text())
        scaling, scheduler_config = float(info["scaling_factor"]), dict(info["scheduler_config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(weights_dir / WEIGHT_FILES[1])!r} is missing or not a mini-sd weights description "
                         f"({type(err).__name__}: {err}); the trainer writes it next to {WEIGHT_FILES[0]}") from None
    vae, text_encoder, unet = build_networks()
    state = {k: v.to(torch.float32) for k, v in load_file(path).items()}
    for prefix, module in (("vae.", vae), ("text_encoder.", text_encoder), ("unet.", unet)):
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return MiniSDModel(vae, text_encoder, unet, scaling_factor=scaling, scheduler_config=scheduler_config,
                       device=device)
