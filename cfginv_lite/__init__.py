"""cfginv-lite: inverting images into diffusion noise when classifier-free guidance is high.

The helper package behind the notebooks. Solvers are small functions in the style of
k-diffusion (``(model, latents, timesteps, guidance, ..., callback=None, progress=True)``).
"""
from __future__ import annotations

import sys as _sys

try:
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
except KeyboardInterrupt:
    # Ctrl-C while torch and diffusers load (seconds) at the start of `python -m cfginv_lite ...` or
    # `python -m cfginv_lite.models.train_digits`: a message and exit 130, not a traceback. Python
    # sets sys.argv[0] to "-m" while it imports the packages of the module to run; an ordinary
    # `import cfginv_lite` still raises KeyboardInterrupt.
    if _sys.argv[:1] != ["-m"]:
        raise
    print("cfginv_lite: interrupted while starting up", file=_sys.stderr)
    raise SystemExit(130) from None

__version__ = "0.1.0"

__all__ = [
    "DiffusionModel", "Guidance", "MODEL_NAMES", "NonFiniteLatentError", "SD1_SCHEDULER_CONFIG",
    "alphas_cumprod_from_config", "guided_noise", "invert_naive", "load_model", "make_guidance",
    "move", "sample_ddim", "timestep_grid",
]
