"""A guidance-distilled student of the rectified-flow twin (``load_model("digits-flow-student")``).

Meng et al. 2023, "On Distillation of Guided Diffusion Models" (CVPR), stage one (eq. 4-5): a
student ``v_s(z, t, c, w)`` that takes the guidance scale ``w`` as an **input** is regressed onto
the teacher's classifier-free guided output ``v_u + w (v_c - v_u)`` (Ho & Salimans 2022, eq. 6)
for ``w`` drawn from a range. FLUX.1-dev is such a model (its ``guidance_in`` embedding is added to
the time embedding). The student here does the same: the digits UNet gets a second sinusoidal
embedding, of the label ``GUIDANCE_LABEL_SCALE * w``, through its own MLP, **added to the time
embedding** (diffusers' ``class_embed_type="timestep"``). Everything else is the teacher's network
(:func:`cfginv_lite.models.digits.build_networks`), started from the teacher's weights with the new
embedding's last layer at zero, so before distillation the student *is* the teacher's
conditional branch at every ``w``.

One network call per image gives the guided velocity (1 NFE instead of 2), and there is **no
unconditional branch**: :func:`cfginv_lite.flow.guided_velocity` never passes the unconditional
(or negative) embedding to it, so null-text inversion has nothing to optimise and negative-prompt
inversion can only change the embedded scale. Trainer: ``python -m cfginv_lite.models.train_flow_student``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..devices import resolve_device
from .digits import WEIGHTS_DIR, TinyTextEncoder, unet_config
from .flow_digits import TIME_LABEL_SCALE, FlowDigitsModel

STUDENT_WEIGHTS_DIR = WEIGHTS_DIR / "digits_flow_student"
#: The network's guidance label is ``GUIDANCE_LABEL_SCALE * w`` (w = 1..8 -> 100..800, the time labels' range).
GUIDANCE_LABEL_SCALE = 100.0
#: The scales the student was distilled on (Meng et al. sample ``w`` uniformly from a range).
GUIDANCE_RANGE = (1.0, 8.0)


def build_student_networks(size: int = 8, text_dim: int = 32) -> tuple[TinyTextEncoder, nn.Module]:
    """The teacher's networks plus a guidance embedding added to the time embedding."""
    from diffusers import UNet2DConditionModel

    return TinyTextEncoder(dim=text_dim), UNet2DConditionModel(**unet_config(size, text_dim),
                                                               class_embed_type="timestep")


def check_scales(scales: object, batch: int) -> torch.Tensor:
    """Guidance scales: a ``(B,)`` tensor of finite real numbers (one per image)."""
    if not isinstance(scales, torch.Tensor) or scales.ndim != 1 or scales.shape[0] != batch:
        shape = tuple(scales.shape) if isinstance(scales, torch.Tensor) else type(scales).__name__
        raise ValueError(f"guidance scales must be a (B,) tensor with B = {batch}, got {shape}")
    if scales.is_complex() or scales.dtype == torch.bool or not bool(torch.isfinite(scales).all()):
        raise ValueError(f"guidance scales must be finite real numbers, got {scales.tolist()}")
    return scales


class FlowStudentModel(FlowDigitsModel):
    """The distilled student: ``predict_velocity(z, t, cond, scales)``, one call = the guided velocity."""

    name = "digits-flow-student"
    guidance_embedded = True

    def predict_velocity(self, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor,
                         scales: torch.Tensor | None = None) -> torch.Tensor:
        """``v_s(z_t, t, c, w)`` for flow times ``t`` ``(B,)`` and guidance scales ``scales`` ``(B,)``."""
        if scales is None:
            raise ValueError("digits-flow-student takes the guidance scale as an input: predict_velocity(z, t, cond, "
                             "scales) with scales a (B,) tensor; it has no unconditional branch")
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.shape[0] != latents.shape[0]:
            raise ValueError(f"flow times must be a (B,) tensor with B = {latents.shape[0]}, "
                             f"got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        scales = check_scales(scales, latents.shape[0])
        return student_forward(self.unet, latents.to(self.device, self.dtype), t.to(self.device, torch.float32),
                               embeddings.to(self.device, self.dtype),
                               scales.to(self.device, torch.float32)).to(latents.dtype)


def student_forward(unet: nn.Module, z: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                    w: torch.Tensor) -> torch.Tensor:
    """The network call the trainer and :meth:`FlowStudentModel.predict_velocity` share."""
    return unet(z, t * TIME_LABEL_SCALE, encoder_hidden_states=emb, class_labels=w * GUIDANCE_LABEL_SCALE).sample


def student_from_teacher(teacher: FlowDigitsModel) -> tuple[TinyTextEncoder, nn.Module]:
    """Student networks holding the teacher's weights, the guidance embedding's output layer at zero."""
    text_encoder, unet = build_student_networks(teacher.size)
    text_encoder.load_state_dict(teacher.text_encoder.state_dict())
    missing, unexpected = unet.load_state_dict(teacher.unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise ValueError(f"teacher weights do not fit the student: missing {missing}, unexpected {unexpected}")
    nn.init.zeros_(unet.class_embedding.linear_2.weight)
    nn.init.zeros_(unet.class_embedding.linear_2.bias)
    return text_encoder, unet


def load_flow_student_model(device: str | torch.device = "cpu", weights_dir: str | Path = STUDENT_WEIGHTS_DIR
                            ) -> FlowStudentModel:
    """Load the student's weights (the shipped ones, or a trainer's ``weights_dir``)."""
    from safetensors.torch import load_file

    device = resolve_device(device)
    weights_dir = Path(weights_dir)
    path = weights_dir / "digits.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no digits-flow-student weights at {path}; distil them with "
                                "`python -m cfginv_lite.models.train_flow_student`")
    try:
        info = json.loads((weights_dir / "digits.json").read_text())
        size = int(info["size"])
        if info.get("parameterisation") != "velocity" or info.get("guidance_embedded") is not True:
            raise ValueError("not a guidance-distilled velocity model")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(weights_dir / 'digits.json')!r} is missing or not a digits-flow-student weights "
                         f"description ({type(err).__name__}: {err})") from None
    state = load_file(path)
    text_encoder, unet = build_student_networks(size)
    text_encoder.load_state_dict({k[len("text_encoder."):]: v for k, v in state.items() if k.startswith("text_encoder.")})
    unet.load_state_dict({k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")})
    return FlowStudentModel(text_encoder, unet, size=size, scheduler_config=info.get("scheduler_config"), device=device)

