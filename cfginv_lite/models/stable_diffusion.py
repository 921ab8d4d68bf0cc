"""Stable Diffusion behind the :class:`~cfginv_lite.models.protocol.DiffusionModel` protocol.

Components are loaded with the public ``from_pretrained`` of diffusers (UNet, VAE, scheduler
config) and transformers (CLIP text encoder and tokenizer), from the usual pipeline folder
layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``). Nothing in
diffusers is patched.

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

import contextlib
import numbers
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..validation import as_prompt_list, batch_labels, check_image_batch
from ..ddim import abar_at, v_to_epsilon
from ..devices import resolve_device  # re-exported here: it lived in this module before
from ..schedule import alphas_cumprod_from_config

DEFAULT_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"

#: Hub ids this loader is written for -> (native image size, prediction type). All use the
#: standard diffusers pipeline layout; none could be loaded where this module was written
#: (no weights can be downloaded there), so the tiny model of the same architecture stands in.
KNOWN_MODEL_IDS: dict[str, tuple[int, str]] = {
    "CompVis/stable-diffusion-v1-4": (512, "epsilon"),                 # SD 1.4
    "stable-diffusion-v1-5/stable-diffusion-v1-5": (512, "epsilon"),   # SD 1.5
    "stabilityai/stable-diffusion-2-1-base": (512, "epsilon"),         # SD 2.1 base
    "stabilityai/stable-diffusion-2-1": (768, "v_prediction"),         # SD 2.1, 768 px
}

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
_DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
}
# from_pretrained arguments that the tokenizer and scheduler-config loaders also understand.
_HUB_KWARGS = ("revision", "cache_dir", "token", "proxies", "force_download")


class ModelNotAvailableError(OSError):
    """Stable Diffusion weights are neither in the local cache nor downloadable.

    A subclass of :class:`OSError`, like the errors of ``from_pretrained`` it replaces, so
    existing ``except OSError`` handlers still work.
    """


# --------------------------------------------------------------------------- device, dtype
def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> fp16 on CUDA, fp32 elsewhere; fp16 on CPU is refused (see message)."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}")
        dtype = _DTYPE_NAMES[dtype.lower()]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"dtype must be float32, float16, bfloat16 or float64, got {dtype}")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError(
            "float16 on the CPU is not supported: many torch CPU kernels for float16 are missing "
            "('not implemented for Half') or far slower than float32, and fp16 accumulation on "
            "the CPU gains nothing. Use dtype=torch.float32 (or torch.bfloat16) on the CPU, "
            "and float16 on a CUDA GPU."
        )
    return dtype


# --------------------------------------------------------------------------- out of memory
@contextlib.contextmanager
def oom_hint(what: str = "the Stable Diffusion call") -> Iterator[None]:
    """Re-raise CUDA out-of-memory errors with what to try, instead of the bare allocator message."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        raise torch.cuda.OutOfMemoryError(
            f"CUDA ran out of memory during {what} ({first_line}). Things to try: "
            "model.enable_attention_slicing() (diffusers' unet.set_attention_slice('auto')); "
            "fewer refinement iterations or a smaller batch; a smaller image "
            "(load_image(..., size=512) and model.set_image_size(512)); dtype='fp16' on CUDA; "
            "`del` unused models and call torch.cuda.empty_cache()."
        ) from None


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
    UNet (CUDA graphs on a GPU; see :class:`StableDiffusionModel`). Known ids: :data:`KNOWN_MODEL_IDS`.

    Raises :class:`ModelNotAvailableError` (an ``OSError``) when the weights are neither cached
    nor downloadable, and ``ValueError`` for a malformed id, device or dtype.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source, is_local = _check_model_id(model_id)
    if local_files_only is None:
        local_files_only = _offline_from_env()
    hub = {k: v for k, v in kwargs.items() if k in _HUB_KWARGS}
    common = dict(local_files_only=bool(local_files_only))

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer  # lazily: heavy import

    def load(component: str, fn: Any) -> Any:
        try:
            return fn()
        except _not_available_errors() as err:
            raise ModelNotAvailableError(_not_available_message(source, is_local, component, err,
                                                                bool(local_files_only))) from None

    wanted = _auto_variant(dev, dt) if variant == "auto" else variant

    def load_weights(component: str, fn: Any) -> Any:
        """``fn(variant=...)`` with the wanted variant; in "auto" mode, without one if it is missing."""
        if wanted is None:
            return load(component, lambda: fn())
        if variant != "auto":
            return load(component, lambda: fn(variant=wanted))
        try:
            return fn(variant=wanted)
        except _not_available_errors():  # no such variant (or not reachable): the plain files
            return load(component, lambda: fn())

    # The small files first, so a missing checkpoint fails before gigabytes are read.
    scheduler_config = load("scheduler", lambda: DDIMScheduler.load_config(
        source, subfolder="scheduler", **common, **hub))
    tokenizer = load("tokenizer", lambda: CLIPTokenizer.from_pretrained(
        source, subfolder="tokenizer", **common, **hub))
    text_encoder = load_weights("text_encoder", lambda **v: CLIPTextModel.from_pretrained(
        source, subfolder="text_encoder", **common, **kwargs, **v))
    # No torch_dtype for the VAE: it is kept in float32 (fp16 variant weights are upcast on load).
    vae = load_weights("vae", lambda **v: AutoencoderKL.from_pretrained(
        source, subfolder="vae", **common, **kwargs, **v))
    unet = load_weights("unet", lambda **v: UNet2DConditionModel.from_pretrained(
        source, subfolder="unet", torch_dtype=dt, **common, **kwargs, **v))
    _check_tokenizer(tokenizer, text_encoder, source)
    return StableDiffusionModel(unet, vae, text_encoder, tokenizer, dict(scheduler_config), dev, dt, image_size,
                                compile_unet=compile_unet)


def _auto_variant(device: torch.device, dtype: torch.dtype) -> str | None:
    """The weight variant ``variant="auto"`` asks for: ``"fp16"`` for fp16 on CUDA, else none."""
    return "fp16" if device.type == "cuda" and dtype == torch.float16 else None


def _check_tokenizer(tokenizer: Any, text_encoder: nn.Module, source: str) -> None:
    """transformers 5 silently builds an *empty* tokenizer when tokenizer/ lacks its files."""
    size, vocab = len(tokenizer), int(text_encoder.config.vocab_size)
    if size < 258:  # fewer tokens than CLIP's 256-symbol byte alphabet plus its 2 special tokens
        raise ModelNotAvailableError(
            f"the 'tokenizer' component of {source!r} has only {size} tokens: its tokenizer/ files (vocab.json, "
            "merges.txt) are missing or incomplete; re-download the model")
    if size > vocab:
        raise ModelNotAvailableError(f"the 'tokenizer' component of {source!r} has {size} tokens but its text "
                                     f"encoder only {vocab} embeddings: tokenizer/ and text_encoder/ do not match")


def _offline_from_env() -> bool:
    """Read the offline switches now (huggingface_hub reads them once, at import)."""
    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(v.strip().upper() in ("1", "ON", "YES", "TRUE") for v in values):
        return True
    try:
        from huggingface_hub import is_offline_mode
    except ImportError:  # older huggingface_hub
        return False
    return bool(is_offline_mode())


def _check_model_id(model_id: Any) -> tuple[str, bool]:
    """Return ``(source, is_local_folder)``; ``ValueError`` for a malformed hub id."""
    if not isinstance(model_id, (str, os.PathLike)) or not os.fspath(model_id).strip():
        raise ValueError(f"model_id must be a hub id like {DEFAULT_MODEL_ID!r} or a local folder, got {model_id!r}")
    text = os.fspath(model_id)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), True
    if isinstance(model_id, os.PathLike) or os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text:
        raise ModelNotAvailableError(f"no Stable Diffusion folder at {text!r} (it does not exist); pass an existing "
                                     "folder with unet/, vae/, text_encoder/, tokenizer/ and scheduler/ subfolders, "
                                     f"or a hub id such as {DEFAULT_MODEL_ID!r}")
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except ValueError as err:  # HFValidationError
        raise ValueError(f"invalid model id {text!r} (and no local folder has that name): {err} "
                         "Hub ids look like 'owner/name' (letters, digits, "
                         f"'-', '_', '.'), e.g. {DEFAULT_MODEL_ID!r}; known ids: {list(KNOWN_MODEL_IDS)}") from None
    return text, False


def _not_available_errors() -> tuple[type[BaseException], ...]:
    """OSError covers huggingface_hub's LocalEntryNotFound/RepositoryNotFound/Gated/HTTP errors."""
    errors: list[type[BaseException]] = [OSError]
    try:
        import httpx

        errors.append(httpx.TransportError)  # raw connection errors, should one escape the hub client
    except ImportError:
        pass
    return tuple(errors)


def _not_available_message(source: str, is_local: bool, component: str, err: BaseException, offline: bool) -> str:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if is_local:
        return (f"cannot load the {component!r} component of the Stable Diffusion folder {source!r} ({reason}). "
                "A pipeline folder needs unet/, vae/, text_encoder/, tokenizer/ and scheduler/ subfolders "
                "(as written by `huggingface-cli download` or DiffusionPipeline.save_pretrained).")
    if type(err).__name__ == "GatedRepoError" or "401" in reason or "403" in reason:
        how = (f"The repository is gated or private: accept its licence on https://huggingface.co/{source} "
               "and log in with `huggingface-cli login` (or pass token=...).")
    elif offline:
        how = "Offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True) and the files are not in the local cache."
    else:
        how = ("The files are not in the local cache and the Hugging Face Hub could not be reached "
               "(or has no such repository).")
    return (f"Stable Diffusion weights for {source!r} are not available: could not load its {component!r} "
            f"({reason}). {how} To get them, on a machine with internet access run "
            f"`huggingface-cli download {source}` (or `hf download {source}`), then point HF_HOME at that cache "
            "(default ~/.cache/huggingface), or pass the path of a downloaded pipeline folder as model_id. "
            f"Known ids: {', '.join(KNOWN_MODEL_IDS)}.")


__all__ = [
    "DEFAULT_MODEL_ID", "KNOWN_MODEL_IDS", "ModelNotAvailableError", "StableDiffusionModel",
    "load_stable_diffusion", "oom_hint", "resolve_device", "resolve_dtype",
]
