"""Synthetic solver traces for the tests of the error curves (metrics) and the step views (widgets)."""
from __future__ import annotations

import numpy as np
import torch

from cfginv_lite.trace import Trace, TraceRecorder


def synthetic_trace(method: str, steps: int = 6, *, shape=(2, 1, 8, 8), seed: int = 0, descending: bool = False,
                    residual: bool = False, noise: bool = True) -> Trace:
    """A trace recorded through TraceRecorder from synthetic solver callbacks."""
    gen = torch.Generator().manual_seed(seed)
    levels = np.linspace(0, 999, steps + 1).astype(int)
    if descending:
        levels = levels[::-1]
    rec = TraceRecorder(method, keep=("latent", "latent_prev", "noise") if noise else ("latent", "latent_prev"))
    z = torch.randn(*shape, generator=gen)
    for i in range(steps):
        z_next = z + 0.1 * torch.randn(*shape, generator=gen)
        rec(dict(step=i, steps=steps, t_from=int(levels[i]), t_to=int(levels[i + 1]), latent=z_next,
                 latent_prev=z, noise=torch.randn(*shape, generator=gen), nfe=2 * (i + 1),
                 residual=torch.full((shape[0],), 0.1 / (i + 1)) if residual else None))
        z = z_next
    return rec.finish()
