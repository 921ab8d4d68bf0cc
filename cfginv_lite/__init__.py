"""cfginv-lite: inverting images into diffusion noise when classifier-free guidance is high.

The helper package behind the notebooks, and its front door: everything a notebook needs is
importable from here (``import cfginv_lite as cl``)::

    model = cl.load_model("digits")
    grid = cl.timestep_grid(20)
    guidance = cl.make_guidance(model, prompts, 7.5)
    result = cl.invert("anderson", model, model.encode(images), grid, guidance)   # by name: cl.METHODS
    latents = cl.regenerate(model, result, grid)                                 # DDIM back down
    results = cl.evaluate(model, cl.digit_sets(model, 7.5, grid), 7.5, grid, "naive")
    cl.step_explorer(traces, reference=...)                                       # the explorers

Solvers are small functions in the style of k-diffusion (``(model, latents, timesteps,
guidance, ..., callback=None, progress=True)``); each reports its steps as a
:class:`StepInfo`. Specialised tools stay in their modules (``cfginv_lite.attribution``,
``cfginv_lite.diagnostics``, ``cfginv_lite.presentation``, ...).
"""
from __future__ import annotations

import sys as _sys

try:
    from .compensate import invert_original
    from .ddim import invert_naive, move, sample_ddim
    from .editing import edit
    from .evidence import digit_sets, evaluate, evaluate_samplers, median_ratio, paired_ratio, spread
    from .exact import invert_bdia, invert_edict, sample_bdia, sample_edict
    from .fixed_point import budget_after_fraction, budget_on_levels, invert_fixed_point
    from .guidance import Guidance, guided_noise, make_guidance
    from .methods import EXACT_WRT, METHODS
    from .methods import run_method as invert
    from .metrics import error_curve, image_rmse, is_collapsed
    from .models import MODEL_NAMES, DiffusionModel, load_model
    from .records import InversionResult, StepInfo, Stop
    from .sampling import generate, regenerate, seeded_noise
    from .schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config, timestep_grid
    from .trace import Trace, TraceRecorder
    from .validation import NonFiniteLatentError
    from .widgets import edit_explorer, step_explorer, step_montage
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
    # models, prompts, grids
    "DiffusionModel", "Guidance", "MODEL_NAMES", "SD1_SCHEDULER_CONFIG", "alphas_cumprod_from_config", "guided_noise",
    "load_model", "make_guidance", "timestep_grid",
    # inverting and regenerating
    "EXACT_WRT", "InversionResult", "METHODS", "NonFiniteLatentError", "StepInfo", "Stop", "budget_after_fraction",
    "budget_on_levels", "generate", "invert", "invert_bdia", "invert_edict", "invert_fixed_point", "invert_naive",
    "invert_original", "move", "regenerate", "sample_bdia", "sample_ddim", "sample_edict", "seeded_noise",
    # measuring
    "digit_sets", "error_curve", "evaluate", "evaluate_samplers", "image_rmse", "is_collapsed", "median_ratio",
    "paired_ratio", "spread",
    # editing and looking
    "Trace", "TraceRecorder", "edit", "edit_explorer", "step_explorer", "step_montage",
]
