"""A behavioural check of the model protocol (``isinstance`` on a runtime-checkable Protocol
only checks that the attribute names exist)."""
from __future__ import annotations

from collections.abc import Mapping

import torch


def assert_implements_protocol(model, images: torch.Tensor) -> None:
    """Attributes of the right types and values, and methods that do what the protocol says."""
    assert isinstance(model.name, str) and model.name
    shape = model.latent_shape
    assert isinstance(shape, tuple) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)
    assert isinstance(model.scheduler_config, Mapping) and model.scheduler_config["num_train_timesteps"] == 1000
    abar = model.alphas_cumprod
    assert abar.dtype == torch.float64 and abar.device.type == "cpu" and abar.shape == (1000,)
    assert bool((abar > 0).all() and (abar < 1).all() and (abar[1:] < abar[:-1]).all())  # noise grows with t
    assert isinstance(model.device, torch.device) and isinstance(model.dtype, torch.dtype)
    emb = model.encode_prompt(["", "a prompt"] if model.name not in ("digits", "mini-sd") else ["", "a handwritten digit three"])
    assert isinstance(emb, torch.Tensor) and emb.ndim == 3 and emb.shape[0] == 2
    z = model.encode(images)
    assert z.shape == (images.shape[0], *shape) and torch.isfinite(z).all()
    out = model.decode(z)
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    latents = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([10.25, 700.0])  # fractional labels are part of the protocol (tless)
    eps = model.predict_noise(latents, labels, emb)
    assert eps.shape == latents.shape and eps.dtype == latents.dtype and torch.isfinite(eps).all()
    other = model.predict_noise(latents, torch.tensor([10.75, 700.0]), emb)
    assert not torch.equal(eps[0], other[0]) and torch.equal(eps[1], other[1])  # the label matters, per row
