"""Model loading: the embedded digits and mini-sd models and Stable Diffusion, one protocol."""
from __future__ import annotations

from typing import Any

from .protocol import DiffusionModel

MODEL_NAMES: tuple[str, ...] = ("digits", "digits-split", "digits-flow", "digits-flow-student", "mini-sd", "stable-diffusion")


def load_model(name: str = "digits", **kwargs: Any) -> DiffusionModel:
    """Load a model by name.

    * ``"digits"``: the embedded model, shipped with the package, CPU, seconds (``device=``,
      ``weights_dir=`` for weights of your own from ``python -m cfginv_lite.models.train_digits``).
    * ``"digits-flow"``: the rectified-flow twin of ``"digits-split"`` (velocity prediction, same
      training split; solvers in :mod:`cfginv_lite.flow`), shipped, CPU.
    * ``"digits-flow-student"``: the guidance-distilled student of ``"digits-flow"`` (the scale is an
      input, no unconditional branch, 1 NFE per guided velocity; Meng et al. 2023), shipped, CPU.
    * ``"mini-sd"``: the embedded latent diffusion model built like SD (VAE + text encoder +
      cross-attention UNet, MNIST), shipped, CPU (``device=``, ``weights_dir=`` for weights of
      your own from ``python -m cfginv_lite.models.train_mini_sd``).
    * ``"stable-diffusion"``: diffusers' ``from_pretrained`` (``model_id=``, ``device=``,
      ``dtype=``); needs the weights locally or network access, and ideally a GPU.
    """
    if name == "digits":
        from .digits import load_digits_model

        unknown = sorted(set(kwargs) - {"device", "weights_dir"})
        if unknown:  # a clear message instead of "got an unexpected keyword argument"
            raise ValueError(f"load_model('digits') takes device= and weights_dir=, got {unknown}")
        return load_digits_model(**kwargs)
    if name == "digits-split":
        from .digits import SPLIT_WEIGHTS_DIR, load_digits_model

        unknown = sorted(set(kwargs) - {"device"})
        if unknown:
            raise ValueError(f"load_model('digits-split') takes device=, got {unknown}")
        model = load_digits_model(weights_dir=SPLIT_WEIGHTS_DIR, **kwargs)
        model.name = "digits-split"   # evidence.digit_sets draws its real images from the held-out side
        return model
    if name == "digits-flow":
        from .flow_digits import load_flow_digits_model  # the rectified-flow twin (velocity, cfginv_lite.flow)

        unknown = sorted(set(kwargs) - {"device", "weights_dir"})
        if unknown:
            raise ValueError(f"load_model('digits-flow') takes device= and weights_dir=, got {unknown}")
        return load_flow_digits_model(**kwargs)
    if name == "digits-flow-student":
        from .flow_student import load_flow_student_model  # guidance as an input (cfginv_lite.flow_student)

        unknown = sorted(set(kwargs) - {"device", "weights_dir"})
        if unknown:
            raise ValueError(f"load_model('digits-flow-student') takes device= and weights_dir=, got {unknown}")
        return load_flow_student_model(**kwargs)
    if name == "mini-sd":
        from .mini_sd import load_mini_sd_model

        unknown = sorted(set(kwargs) - {"device", "weights_dir"})
        if unknown:
            raise ValueError(f"load_model('mini-sd') takes device= and weights_dir=, got {unknown}")
        return load_mini_sd_model(**kwargs)
    if name == "stable-diffusion":
        from .stable_diffusion import load_stable_diffusion  # imports transformers lazily

        return load_stable_diffusion(**kwargs)
    raise ValueError(f"unknown model name {name!r}; choose one of {MODEL_NAMES}")
    # Devices are resolved by each loader with cfginv_lite.devices.resolve_device (one message for all).


__all__ = ["DiffusionModel", "MODEL_NAMES", "load_model"]
