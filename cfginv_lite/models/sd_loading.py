"""Loading Stable Diffusion's components, and the errors that say what to do when it fails.

:func:`load_components` reads a pipeline folder or hub id with the public ``from_pretrained`` of
diffusers and transformers (scheduler config and tokenizer first, so a missing checkpoint fails
before gigabytes are read) and turns "not cached / not reachable / gated / incomplete folder"
into one :class:`ModelNotAvailableError` naming the component and how to get the weights.
:func:`resolve_dtype` and :func:`oom_hint` are the dtype rule and the out-of-memory message of
:class:`~cfginv_lite.models.stable_diffusion.StableDiffusionModel`, which
:func:`~cfginv_lite.models.stable_diffusion.load_stable_diffusion` builds from these components.

``transformers`` and ``diffusers`` are imported only inside :func:`load_components`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

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


# --------------------------------------------------------------------------- loading
def load_components(model_id: str | os.PathLike[str], device: torch.device, dtype: torch.dtype, *,
                    local_files_only: bool | None = None, variant: str | None = "auto",
                    **kwargs: Any) -> tuple[nn.Module, nn.Module, nn.Module, Any, dict[str, Any]]:
    """``(unet, vae, text_encoder, tokenizer, scheduler_config)`` of a checkpoint, for ``device``/``dtype``.

    The arguments of :func:`~cfginv_lite.models.stable_diffusion.load_stable_diffusion` (which
    documents them); ``device`` and ``dtype`` already resolved.
    """
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

    wanted = _auto_variant(device, dtype) if variant == "auto" else variant

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
        source, subfolder="unet", torch_dtype=dtype, **common, **kwargs, **v))
    _check_tokenizer(tokenizer, text_encoder, source)
    return unet, vae, text_encoder, tokenizer, dict(scheduler_config)


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


__all__ = ["DEFAULT_MODEL_ID", "KNOWN_MODEL_IDS", "ModelNotAvailableError", "load_components", "oom_hint",
           "resolve_dtype"]
