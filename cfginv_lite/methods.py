"""The registry of inversion methods: one calling convention, for the CLI, benchmarks and notebooks.

Every entry is ``fn(model, latents, grid, guidance, *, callback=None, progress=False,
**options) -> InversionResult``: a baseline itself, or a latent-returning solver bound with
:func:`functools.partial` to :func:`run_solver` and its settings. Call-time ``options``
override an entry's settings (``run_method("original", ..., refine_iterations=5)``).
``nfe``/``nfe_backward`` are per image (the max over the batch where images stopped at
different iterations).
"""
from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable

import torch

from .baselines import invert_negative_prompt, invert_null_text
from .compensate import invert_original
from .ddim import invert_naive
from .exact import BDIA_GAMMA_HALF, invert_bdia, invert_edict, sample_bdia, sample_edict
from .fixed_point import HARD_LEVELS, budget_on_levels, invert_fixed_point
from .guidance import Guidance
from .records import InversionResult, StepCallback

InversionMethod = Callable[..., InversionResult]


class NFECounter:
    """Callback wrapper that remembers the last cumulative ``nfe`` a solver reported.

    The value (an int, or a ``(B,)`` tensor per image) is read on the host only when
    :attr:`nfe` is asked for, after the solver ran: counting adds no sync to the loop.
    """

    def __init__(self, inner: StepCallback | None = None) -> None:
        self.inner, self._nfe = inner, 0

    def __call__(self, info: dict[str, Any]) -> None:
        self._nfe = info.get("nfe", self._nfe)
        if self.inner is not None:
            self.inner(info)

    @property
    def nfe(self) -> int:
        """Network evaluations per image so far (the max over the batch)."""
        return int(self._nfe.max()) if isinstance(self._nfe, torch.Tensor) else int(self._nfe)


def run_solver(solver: Callable[..., torch.Tensor], model: Any, latents: torch.Tensor, grid: list[int],
               guidance: Guidance, *, callback: StepCallback | None = None, progress: bool = False,
               **options: Any) -> InversionResult:
    """Run a solver that returns the inverted latents; count its NFE from its callback."""
    counter = NFECounter(callback)
    z = solver(model, latents, grid, guidance, callback=counter, progress=progress, **options)
    return InversionResult(z, guidance, counter.nfe)


def run_exact(inverse: Callable[..., tuple[torch.Tensor, torch.Tensor]], sampler: Callable[..., torch.Tensor],
              model: Any, latents: torch.Tensor, grid: list[int], guidance: Guidance, *,
              callback: StepCallback | None = None, progress: bool = False, **options: Any) -> InversionResult:
    """Run an exact-by-construction inversion (:mod:`cfginv_lite.exact`): keep its pair and its sampler.

    ``options`` (``mix``, ``gamma``) go to both the inversion and the sampler: the pair is exact
    only for the sampler with the same settings.
    """
    counter = NFECounter(callback)
    z, partner = inverse(model, latents, grid, guidance, callback=counter, progress=progress, **options)
    return InversionResult(z, guidance, counter.nfe, partner=partner, sampler=partial(sampler, **options))


#: name -> method. The seed's method at its defaults (3 iterations), the author's showcase
#: (5) and with the "numerically correct" destination label; its relatives: plain fixed
#: point on every step (Meiri et al.), damped, Anderson (AIDI) and Anderson with a per-step
#: budget ("focused": 4 iterations up to level 349, 2 above), all :func:`invert_fixed_point`;
#: the exact-by-construction EDICT and BDIA (:mod:`cfginv_lite.exact`, each with its own
#: sampler); the two baselines.
METHODS: dict[str, InversionMethod] = {
    "naive": partial(run_solver, invert_naive, label="source"),
    "naive-destination": partial(run_solver, invert_naive, label="destination"),
    "original": partial(run_solver, invert_original),
    "original-showcase": partial(run_solver, invert_original, refine_iterations=5),
    "original-no-tless": partial(run_solver, invert_original, tless_factor=None),
    "fixed-point": partial(run_solver, invert_fixed_point, budget=10),
    "fixed-point-damped": partial(run_solver, invert_fixed_point, budget=10, damping=0.5),
    "anderson": partial(run_solver, invert_fixed_point, budget=5, window=3),
    "focused": partial(run_solver, invert_fixed_point, budget=budget_on_levels(4, HARD_LEVELS, 2), window=3),
    "edict": partial(run_exact, invert_edict, sample_edict),
    "bdia": partial(run_exact, invert_bdia, sample_bdia, gamma=1.0),
    "bdia-half": partial(run_exact, invert_bdia, sample_bdia, gamma=BDIA_GAMMA_HALF),
    "negative-prompt": invert_negative_prompt,
    "null-text": invert_null_text,
}

#: name -> the sampler each method's latents reproduce the input with, and how exactly
#: ("exact with respect to which sampler", the column of every comparison table).
EXACT_WRT: dict[str, str] = {
    "naive": "none (approximate)",
    "naive-destination": "none (approximate)",
    "original": "DDIM, to its early-stop threshold (noisiest 30% of steps)",
    "original-showcase": "DDIM, to its early-stop threshold (noisiest 30% of steps)",
    "original-no-tless": "DDIM, to its early-stop threshold (noisiest 30% of steps)",
    "fixed-point": "DDIM, to the solver's residual",
    "fixed-point-damped": "DDIM, to the solver's residual",
    "anderson": "DDIM, to the solver's residual",
    "focused": "DDIM, to the solver's residual (4 it. up to level 349, 2 above)",
    "edict": "EDICT sampler (p = 0.93), exact to round-off",
    "bdia": "BDIA sampler (gamma = 1), exact to round-off",
    "bdia-half": "BDIA sampler (the often-quoted gamma = 0.5), exact in exact arithmetic",
    "negative-prompt": "DDIM at CFG 1 (conditional only), approximate",
    "null-text": "DDIM with its optimised null embeddings, to the optimiser's loss",
}


#: A method as evaluation code takes it: a registered name, or a ``(display name, fn)`` pair with
#: ``fn`` following the registry's convention (exploration code passes its own that way).
MethodSpec = str | tuple[str, InversionMethod]


def resolve_method(method: Any) -> tuple[str, InversionMethod]:
    """``(display name, fn)`` of a registered name (its :data:`METHODS` entry) or of a ``(name, fn)`` pair."""
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}, or pass a (name, fn) pair")
        return method, METHODS[method]
    if isinstance(method, tuple) and len(method) == 2 and isinstance(method[0], str) and method[0].strip() and (
            callable(method[1])):
        return method[0], method[1]
    raise ValueError(f"method must be a registered name or a (name, fn) pair with a non-empty name and fn(model, "
                     f"latents, grid, guidance, *, callback, progress, **options) -> InversionResult; got {method!r}")


def run_method(name: str, model: Any, latents: torch.Tensor, grid: list[int], guidance: Guidance, *,
               callback: StepCallback | None = None, progress: bool = False, **options: Any) -> InversionResult:
    """Run a registered method by name and time it."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    start = time.perf_counter()
    result = METHODS[name](model, latents, grid, guidance, callback=callback, progress=progress, **options)
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["EXACT_WRT", "InversionMethod", "InversionResult", "METHODS", "MethodSpec", "NFECounter", "resolve_method",
           "run_exact", "run_method", "run_solver"]
