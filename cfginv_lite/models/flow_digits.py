"""The rectified-flow twin of the digits model (``load_model("digits-flow")``).

Same text encoder, same UNet (:func:`cfginv_lite.models.digits.build_networks`), same 8x8 pixel
"latents" (no VAE: ``encode``/``decode`` are the identity), but a **velocity** prediction in the
rectified-flow convention of Stable Diffusion 3 (Esser et al. 2024, "Scaling Rectified Flow
Transformers for High-Resolution Image Synthesis", eq. 1-3; Liu et al. 2022, "Flow Straight and
Fast"; Lipman et al. 2022, "Flow Matching for Generative Modeling")::

    z_t = (1 - t) x0 + t noise,   t in [0, 1],   v(z_t, t, c) ~ noise - x0

The network sees the time label ``1000 t`` (the digits UNet's sinusoidal embedding, fractional).
Trained on the training side of the digits split (:func:`cfginv_lite.data.heldout_indices` ``(50)``),
so the held-out digits are images it never saw (``python -m cfginv_lite.models.train_flow_digits``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..devices import resolve_device
from .digits import WEIGHTS_DIR, DigitsModel, build_networks

FLOW_WEIGHTS_DIR = WEIGHTS_DIR / "digits_flow"
FLOW_WEIGHT_FILES: tuple[str, ...] = ("digits.safetensors", "digits.json")
#: The network's time label is ``TIME_LABEL_SCALE * t`` (the range the digits UNet was built for).
TIME_LABEL_SCALE = 1000.0


class FlowDigitsModel(DigitsModel):
    """A velocity model with the digits model's encoder, tokenizer, prompts and persistence.

    ``predict_velocity(z, t, emb)`` replaces ``predict_noise``: a flow model has no DDIM schedule,
    so the epsilon protocol's ``predict_noise`` refuses with a message naming the flow solvers
    (:mod:`cfginv_lite.flow`) instead of answering in the wrong parameterisation.
    """

    name = "digits-flow"
    parameterisation = "velocity"

    def predict_velocity(self, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``v(z_t, t, c)`` for flow times ``t`` ``(B,)`` in ``[0, 1]`` (one batched network call)."""
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.shape[0] != latents.shape[0]:
            raise ValueError(f"flow times must be a (B,) tensor with B = {latents.shape[0]}, "
                             f"got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        labels = (t.to(self.device, torch.float32) * TIME_LABEL_SCALE)
        out = self.unet(latents.to(self.device, self.dtype), labels,
                        encoder_hidden_states=embeddings.to(self.device, self.dtype)).sample
        return out.to(latents.dtype)

    def predict_noise(self, latents: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        raise TypeError("digits-flow is a rectified-flow (velocity) model: it has no DDIM noise prediction; "
                        "use cfginv_lite.flow (invert_euler, sample_euler, ...) with model.predict_velocity")


def load_flow_digits_model(device: str | torch.device = "cpu", weights_dir: str | Path = FLOW_WEIGHTS_DIR
                           ) -> FlowDigitsModel:
    """Load the flow twin's weights (the shipped ones, or a trainer's ``weights_dir``)."""
    from safetensors.torch import load_file

    device = resolve_device(device)
    weights_dir = Path(weights_dir)
    path = weights_dir / "digits.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no digits-flow weights at {path}; train them with "
                                "`python -m cfginv_lite.models.train_flow_digits`")
    try:
        info = json.loads((weights_dir / "digits.json").read_text())
        size = int(info["size"])
        if info.get("parameterisation") != "velocity":
            raise ValueError("not a velocity model")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(weights_dir / 'digits.json')!r} is missing or not a digits-flow weights description "
                         f"({type(err).__name__}: {err})") from None
    state = load_file(path)
    text_encoder, unet = build_networks(size)
    text_encoder.load_state_dict({k[len("text_encoder."):]: v for k, v in state.items() if k.startswith("text_encoder.")})
    unet.load_state_dict({k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")})
    model = FlowDigitsModel(text_encoder, unet, size=size, scheduler_config=info.get("scheduler_config"), device=device)
    return model


def flow_metadata(extra: dict[str, Any]) -> dict[str, Any]:
    """What ``digits.json`` of a flow model holds besides the size (the loader checks ``parameterisation``)."""
    return {"parameterisation": "velocity", "convention": "z_t = (1 - t) x0 + t noise, v = noise - x0 (SD3)",
            "time_label_scale": TIME_LABEL_SCALE, **extra}
