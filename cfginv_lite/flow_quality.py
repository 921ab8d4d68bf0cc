"""Quality gates of the rectified-flow twin, measured the same way by the tests and by ``benchmarks/flow_gates.py``.

* :func:`flow_generation_accuracy`: Euler sampling (the SD3/FLUX sampler) of ``per_digit`` digits per class
  from seeded Gaussian noise at a guidance scale, judged by a classifier (an RBF SVM on the split's
  training digits, :func:`cfginv_lite.data.train_digit_classifier`), with a bootstrap 95% interval.
* :func:`flow_phenomenon`: the course's phenomenon on the twin: reversed Euler inversion of held-out
  real digits, Euler regeneration, at two guidance scales; per-image errors, the ratio of medians
  with its bootstrap interval and the paired ratio (:mod:`cfginv_lite.evidence`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .data import digit_prompt, split_digit_set
from .guidance import make_guidance
from .evidence import Spread, median_ratio, paired_ratio, spread
from .flow import flow_grid, invert_euler, sample_euler
from .metrics import image_rmse
from .quality import Accuracy, bootstrap_accuracy
from .validation import check_int


def flow_generate(model: Any, labels: Sequence[int], scale: float, steps: int = 20, seed: int = 0) -> torch.Tensor:
    """Images of the digits ``labels`` by Euler sampling from seeded noise (one generator for the batch)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(labels), *model.latent_shape), generator=gen).to(model.device)
    g = make_guidance(model, [digit_prompt(d) for d in labels], scale)
    with torch.no_grad():
        return model.decode(sample_euler(model, noise, flow_grid(steps), g, progress=False))


def flow_generation_accuracy(model: Any, predict: Callable[[torch.Tensor], np.ndarray], *, per_digit: int = 10,
                             scale: float = 3.0, steps: int = 20, seed: int = 0) -> tuple[Accuracy, torch.Tensor]:
    """Generate ``per_digit`` digits of each class and judge them; returns the accuracy and the images."""
    per_digit, steps = check_int("per_digit", per_digit, minimum=1), check_int("steps", steps, minimum=1)
    labels = [d for d in range(10) for _ in range(per_digit)]
    images = flow_generate(model, labels, scale, steps, seed)
    return bootstrap_accuracy(predict(images) == np.asarray(labels)), images


@dataclass(frozen=True)
class FlowPhenomenon:
    """Reversed Euler inversion of held-out real digits at two guidance scales."""

    errors: dict[float, np.ndarray]
    spreads: dict[float, Spread]
    ratio_of_medians: Spread
    paired: Spread
    steps: int


def flow_phenomenon(model: Any, *, per_digit: int = 10, steps: int = 10, scales: Sequence[float] = (1.0, 7.5),
                    seed: int = 0) -> FlowPhenomenon:
    """Invert ``10 * per_digit`` held-out digits by reversed Euler, regenerate by Euler, at ``scales = (low, high)``."""
    low, high = (float(s) for s in scales)
    images, labels = split_digit_set("heldout", check_int("per_digit", per_digit, minimum=1), seed=seed)
    prompts, times = [digit_prompt(d) for d in labels], flow_grid(check_int("steps", steps, minimum=1))
    errors = {}
    with torch.no_grad():
        for w in (low, high):
            g = make_guidance(model, prompts, w)
            z = invert_euler(model, images.to(model.device), times, g, progress=False)
            back = model.decode(sample_euler(model, z, times, g, progress=False)).cpu()
            errors[w] = image_rmse(back, images).numpy()
    return FlowPhenomenon(errors, {w: spread(e) for w, e in errors.items()}, median_ratio(errors[high], errors[low]),
                          paired_ratio(errors[high], errors[low]), steps)


def flow_matching_loss(model: Any, images: torch.Tensor, labels: Sequence[int], *, seed: int = 0,
                       repeats: int = 4) -> float:
    """Held-out conditional flow-matching loss ``E |v(z_t, t, c) - (noise - x0)|^2`` (Lipman et al. 2022,
    eq. 9) with seeded ``t ~ U(0, 1)`` and noise, ``repeats`` draws per image: the same draws for every
    model, so two models' losses compare directly."""
    gen = torch.Generator().manual_seed(seed)
    x0 = images.repeat(repeats, 1, 1, 1)
    t = torch.rand(len(x0), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    tt = t.view(-1, 1, 1, 1)
    emb = model.encode_prompt([digit_prompt(d) for d in labels] * repeats)
    with torch.no_grad():
        v = model.predict_velocity((1 - tt) * x0 + tt * noise, t, emb)
    return float((v - (noise - x0)).pow(2).mean())


__all__ = ["flow_matching_loss", "FlowPhenomenon", "flow_generate", "flow_generation_accuracy", "flow_phenomenon"]
