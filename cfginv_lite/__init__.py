"""cfginv-lite: inverting images into diffusion noise when classifier-free guidance is high.

The helper package behind the notebooks. Solvers are small functions in the style of
k-diffusion (``(model, latents, timesteps, guidance, ..., callback=None, progress=True)``).
"""
from __future__ import annotations

from .ddim import (
    Guidance,
    NonFiniteLatentError,
    guided_noise,
    invert_naive,
    make_guidance,
    move,
    sample_ddim,
)
from .models import MODEL_NAMES, DiffusionModel, load_model
from .schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config, timestep_grid

__version__ = "0.1.0"

__all__ = [
    "DiffusionModel", "Guidance", "MODEL_NAMES", "NonFiniteLatentError", "SD1_SCHEDULER_CONFIG",
    "alphas_cumprod_from_config", "guided_noise", "invert_naive", "load_model", "make_guidance",
    "move", "sample_ddim", "timestep_grid",
]
