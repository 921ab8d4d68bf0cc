"""Stable Diffusion behind the :class:`~cfginv_lite.models.protocol.DiffusionModel` protocol.

:func:`load_stable_diffusion` builds a :class:`StableDiffusionModel` from components loaded with
the public ``from_pretrained`` of diffusers (UNet, VAE, scheduler config) and transformers (CLIP
text encoder and tokenizer), from the usual pipeline folder layout (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``); the loading and its error messages are in
:mod:`cfginv_lite.models.sd_loading`. Nothing in diffusers is patched.

Conventions (the same for every model of the package):

* Images are ``(B, 3, H, W)`` in ``[-1, 1]``; latents are ``vae_mean_or_sample * scaling_factor``
  with the scaling factor read from ``vae.config`` (0.18215 for SD 1.x/2.x, but never assumed).
* :meth:`StableDiffusionModel.predict_noise` always returns an **epsilon** prediction:
  v-prediction models (SD 2.x at 768 px) are converted with ``eps = a_t v + b_t z``
  (Salimans & Ho 2022, sec. 4), sample-prediction models with ``eps = (z - a_t x0) / b_t``.
* The network runs in ``model.dtype`` (fp16 on CUDA by default), but latents stay in the
  caller's dtype (float32 from :meth:`~StableDiffusionModel.encode`): each call casts in and
  out, so the solvers' 50-step arithmetic does not accumulate fp16 rounding.
* The VAE is kept in float32 whatever ``dtype`` is: the SD VAE decoder overflows in fp16 and
  returns NaNs (black images); diffusers itself upcasts it (``force_upcast``).

``transformers`` is imported only inside functions, so ``import cfginv_lite`` stays light.
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..validation import as_prompt_list, batch_labels, check_image_batch
from ..ddim import abar_at, v_to_epsilon
from ..devices import resolve_device  # re-exported here: it lived in this module before
from ..schedule import alphas_cumprod_from_config
from .sd_loading import DEFAULT_MODEL_ID, ModelNotAvailableError, load_components, oom_hint, resolve_dtype

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


# --------------------------------------------------------------------------- the model
def _place(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move to ``device``/``dtype`` for inference; cast only when needed (diffusers warns on every cast)."""
    if any(p.dtype != dtype for p in module.parameters() if p.is_floating_point()):
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)


class StableDiffusionModel:
    """A Stable Diffusion UNet + VAE + CLIP text encoder implementing the model protocol.

    Parameters
    ----------
    unet, vae, text_encoder, tokenizer:
        diffusers ``UNet2DConditionModel`` and ``AutoencoderKL``, transformers ``CLIPTextModel``
        and ``CLIPTokenizer``. ``text_encoder``/``tokenizer`` may be ``None`` (benchmarks that
        feed embeddings directly); :meth:`encode_prompt` then raises.
    scheduler_config:
        The pipeline's scheduler config (dict); gives the schedule and ``prediction_type``.
    device, dtype:
        Where and in which precision the UNet and text encoder run (``None``: CUDA + fp16 if
        available, else CPU + fp32). The VAE runs in ``vae_dtype`` (float32 by default).
    image_size:
        Pixel size ``S`` or ``(H, W)``, a multiple of the VAE factor (8); sets ``latent_shape``.
    compile_unet:
        Opt-in ``torch.compile`` of the UNet (``mode="reduce-overhead"`` on CUDA: the call is
        captured once and replayed as a CUDA graph, without one launch per kernel; an eager
        SD 1.5 call is launch-bound). The solvers keep every batch's shape constant, so one
        capture serves a whole inversion; a new batch size or image size recompiles.
    """

    name = "stable-diffusion"

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module | None, tokenizer: Any,
                 scheduler_config: Mapping[str, Any], device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, image_size: int | tuple[int, int] = 512, *,
                 vae_dtype: torch.dtype = torch.float32, compile_unet: bool = False) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.vae_dtype = resolve_dtype(vae_dtype, self.device)
        self.scheduler_config = dict(scheduler_config)
        self.prediction_type = str(self.scheduler_config.get("prediction_type", "epsilon"))
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}; "
                             f"expected one of {PREDICTION_TYPES}")
        self.alphas_cumprod = alphas_cumprod_from_config(self.scheduler_config)
        self._abar_table = self.alphas_cumprod.to(self.device)  # for conversions without a host sync
        self.unet = _place(unet, self.device, self.dtype)
        self.compiled = bool(compile_unet)
        if self.compiled:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self.unet = torch.compile(self.unet, mode=mode, dynamic=False)
        self.vae = _place(vae, self.device, self.vae_dtype)
        self.text_encoder = None if text_encoder is None else _place(text_encoder, self.device, self.dtype)
        self.tokenizer = tokenizer
        self.scaling_factor = float(self.vae.config.scaling_factor)
        shift = getattr(self.vae.config, "shift_factor", None)  # None for SD 1.x/2.x
        self.shift_factor = 0.0 if shift is None else float(shift)
        # AutoencoderKL downsamples once per block but the last: 2^(4-1) = 8 for SD.
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.unet.config.in_channels)
        self.set_image_size(image_size)

    # Configuration ----------------------------------------------------------------
    def set_image_size(self, size: int | tuple[int, int]) -> None:
        """Set the pixel size ``S`` (square) or ``(H, W)``; updates ``latent_shape``."""
        h, w = (size, size) if isinstance(size, numbers.Integral) and not isinstance(size, bool) else tuple(size)
        f = self.vae_scale_factor
        for side in (h, w):  # numpy integers count as integers, as everywhere in the package
            if isinstance(side, bool) or not isinstance(side, numbers.Integral) or side < f or side % f:
                raise ValueError(f"image size must be a positive multiple of {f} (the VAE factor), got {size!r}")
        h, w = int(h), int(w)
        self.image_size = (h, w)
        self.latent_shape = (self.latent_channels, h // f, w // f)

    def enable_attention_slicing(self, slice_size: str | int = "auto") -> None:
        """Compute attention in slices (less memory, slightly slower): ``unet.set_attention_slice``."""
        self.unet.set_attention_slice(slice_size)

    # The protocol -------------------------------------------------------------------
    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None,
               sample: bool = False) -> torch.Tensor:
        """VAE-encode images ``(B, 3, H, W)`` in ``[-1, 1]`` to latents ``(B, *latent_shape)``.

        ``latent = (m - shift) * scaling_factor`` with ``m`` the mean of the VAE's diagonal
        Gaussian (``sample=False``) or a draw from it with ``generator`` (``sample=True``; the
        original notebook's choice). The generator may live on the CPU or on ``self.device``;
        it is ignored when ``sample=False``. Returns float32 latents (the VAE's dtype).
        """
        images = self._check_images(images)
        if sample and generator is not None and generator.device.type not in ("cpu", self.device.type):
            raise ValueError(f"generator is on {generator.device}, the VAE on {self.device}; "
                             f"use torch.Generator('cpu') or torch.Generator('{self.device.type}')")
        with oom_hint("VAE encoding"), torch.no_grad():
            dist = self.vae.encode(images.to(self.device, self.vae_dtype)).latent_dist
            latents = dist.sample(generator=generator) if sample else dist.mean
        return (latents - self.shift_factor) * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in ``[-1, 1]``: ``vae.decode(z / scaling_factor + shift)``, clamped."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor (B, {self.latent_channels}, h, w), got {shape}")
        z = latents.to(self.device, self.vae_dtype) / self.scaling_factor + self.shift_factor
        with oom_hint("VAE decoding"):
            return self.vae.decode(z).sample.clamp(-1, 1)

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP embeddings ``(B, 77, D)`` of the last hidden layer, as the SD pipelines use them.

        Prompts are padded to ``tokenizer.model_max_length`` (77 for CLIP) and truncated, as the
        SD pipelines do; a prompt longer than that gets a ``UserWarning`` naming how many tokens
        the text encoder never sees. ``""`` (padding only) is the unconditional branch.
        """
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("this model was built without a text encoder/tokenizer; pass embeddings directly")
        prompts = as_prompt_list(prompts)  # the shared rule: a string is one prompt, items must be strings
        self._warn_long_prompts(prompts)
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        # SD 1.x/2.x text encoders are used without an attention mask unless their config asks.
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        mask = tokens.attention_mask.to(self.device) if use_mask else None
        with oom_hint("text encoding"):
            return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0].to(self.dtype)

    def _warn_long_prompts(self, prompts: list[str]) -> None:
        """Warn (once per call) about prompts that CLIP's context window cuts off."""
        import warnings

        limit = int(self.tokenizer.model_max_length)
        # Counted with the start/end tokens the padded call adds. Every BPE token covers at least one
        # byte of the text, so only prompts of more than limit - 2 bytes can be cut: only they are
        # tokenized a second time.
        long = [(k, p) for k, p in enumerate(prompts) if len(p.encode("utf-8")) > limit - 2]
        if not long:
            return
        ids = self.tokenizer([p for _, p in long], truncation=False).input_ids
        cut = [(k, len(i)) for (k, _), i in zip(long, ids) if len(i) > limit]
        if cut:
            k, n = cut[0]
            warnings.warn(f"{len(cut)} prompt(s) exceed the text encoder's {limit} tokens and are truncated, as in "
                          f"the Stable Diffusion pipelines (prompt {k} has {n} tokens: its last {n - limit} are "
                          "ignored); shorten them to keep every word", UserWarning, stacklevel=3)

    def predict_noise(self, latents: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``eps(z, t, c)`` from one batched UNet call; returned in the dtype of ``latents``.

        ``labels`` are float timestep labels ``(B,)`` (fractional allowed: the UNet's sinusoidal
        time embedding is defined for any real ``t``). v- and x0-predictions are converted to
        epsilon with ``abar`` interpolated at the label (:func:`cfginv_lite.ddim.abar_at`).
        Gradients flow when the caller enables them (null-text inversion optimises embeddings).
        """
        batch = latents.shape[0]
        labels = batch_labels(labels, batch)
        with oom_hint(f"a UNet call (batch {batch}, latents {tuple(latents.shape[1:])}, {self.dtype})"):
            out = self.unet(latents.to(self.device, self.dtype), labels.to(self.device),
                            encoder_hidden_states=embeddings.to(self.device, self.dtype)).sample
        if self.compiled:  # a CUDA-graph replay overwrites its output buffer on the next call
            out = out.clone()
        return self._to_epsilon(out, latents, labels)

    def _to_epsilon(self, out: torch.Tensor, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Convert the raw UNet output to epsilon, in float32, then to the latents' dtype."""
        if self.prediction_type == "epsilon":
            return out.to(latents.dtype)
        abar = self._abar(labels.to(out.device))
        z = latents.to(out.device, torch.float32)
        if self.prediction_type == "v_prediction":
            return v_to_epsilon(out.float(), z, abar).to(latents.dtype)
        # "sample": z = a x0 + b eps  =>  eps = (z - a x0) / b   (b > 0 for every t >= 0 of SD)
        abar = abar.to(out.device, torch.float64).view(-1, *([1] * (z.ndim - 1)))
        a, b = abar.sqrt().float(), (1 - abar).sqrt().float()
        return ((z - a * out.float()) / b).to(latents.dtype)

    def _abar(self, labels: torch.Tensor) -> torch.Tensor:
        """``abar`` at the labels, on their device (the table is kept there: no host sync)."""
        return abar_at(self._abar_table, labels)

    # Validation ---------------------------------------------------------------------
    def _check_images(self, images: Any) -> torch.Tensor:
        images = check_image_batch(images, channels=3)  # type, shape, empty batch, dtype, [-1, 1]: shared
        h, w = images.shape[-2:]
        f = self.vae_scale_factor
        if h % f or w % f:
            raise ValueError(f"image height and width must be multiples of {f}, got {h}x{w}")
        if (h, w) != self.image_size:
            raise ValueError(f"images are {h}x{w} but the model is set up for {self.image_size[0]}x"
                             f"{self.image_size[1]}; call model.set_image_size(({h}, {w})) or resize the images")
        return images


# --------------------------------------------------------------------------- loading
def load_stable_diffusion(model_id: str | os.PathLike[str] = DEFAULT_MODEL_ID, device: str | torch.device | None = None,
                          dtype: str | torch.dtype | None = None, image_size: int | tuple[int, int] = 512,
                          local_files_only: bool | None = None, compile_unet: bool = False,
                          variant: str | None = "auto", **kwargs: Any) -> StableDiffusionModel:
    """Load a Stable Diffusion checkpoint (hub id or local pipeline folder) as a model.

    ``device``: ``None`` -> CUDA if available else CPU. ``dtype``: ``None`` -> fp16 on CUDA,
    fp32 on CPU; fp16 on the CPU is refused; bf16 is allowed. ``local_files_only``: ``None``
    -> ``True`` when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set. ``variant``: the
    weight files to read (``"fp16"`` reads ``*.fp16.safetensors``); ``"auto"`` (default) asks for
    the ``fp16`` variant when the model runs in fp16 on CUDA (half the download: about 2 GB
    instead of 4 for SD 1.5) and falls back, per component, to the plain files where the
    repository or folder has no such variant; ``None`` always reads the plain files; any other
    value is passed as is (diffusers and transformers raise when it is missing). Other keyword
    arguments (``revision``, ``cache_dir``, ``token``, ...) go to ``from_pretrained``.
    For SD 2.1 at 768 px pass ``image_size=768``. ``compile_unet=True``: ``torch.compile`` the
    UNet (CUDA graphs on a GPU; see :class:`StableDiffusionModel`). Known ids:
    :data:`cfginv_lite.models.sd_loading.KNOWN_MODEL_IDS`.

    Raises :class:`ModelNotAvailableError` (an ``OSError``) when the weights are neither cached
    nor downloadable, and ``ValueError`` for a malformed id, device or dtype.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    parts = load_components(model_id, dev, dt, local_files_only=local_files_only, variant=variant, **kwargs)
    return StableDiffusionModel(*parts, dev, dt, image_size, compile_unet=compile_unet)


# ModelNotAvailableError: what load_stable_diffusion raises, importable with it (tests and users catch it here).
__all__ = ["ModelNotAvailableError", "PREDICTION_TYPES", "StableDiffusionModel", "load_stable_diffusion",
           "resolve_device"]
