"""A registry of inversion methods with one calling convention, for the CLI and benchmarks.

Each entry maps a name to ``fn(model, latents, grid, guidance, *, callback, progress) ->
InversionResult``. Solvers stay plain functions (:mod:`cfginv_lite.ddim`,
:mod:`cfginv_lite.compensate`, :mod:`cfginv_lite.baselines`); this module only adapts them
so that ``python -m cfginv_lite compare`` can run them side by side.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .ddim import Guidance, StepCallback, invert_naive


@dataclass
class InversionResult:
    """Inverted latents plus what regeneration must use and what it cost (per image)."""

    latents: torch.Tensor
    guidance: Guidance           # null-text returns per-step unconditional embeddings here
    nfe: int                     # forward network evaluations per image
    nfe_backward: int = 0        # backward passes per image (null-text)
    seconds: float = 0.0


InversionMethod = Callable[..., InversionResult]
METHODS: dict[str, InversionMethod] = {}


def register(name: str) -> Callable[[InversionMethod], InversionMethod]:
    def deco(fn: InversionMethod) -> InversionMethod:
        METHODS[name] = fn
        return fn
    return deco


class NFECounter:
    """Callback wrapper that remembers the last cumulative ``nfe`` a solver reported."""

    def __init__(self, inner: StepCallback | None = None) -> None:
        self.inner, self.nfe = inner, 0

    def __call__(self, info: dict[str, Any]) -> None:
        self.nfe = int(info.get("nfe", self.nfe))
        if self.inner is not None:
            self.inner(info)


def run_method(name: str, model: Any, latents: torch.Tensor, grid: list[int], guidance: Guidance, *,
               callback: StepCallback | None = None, progress: bool = False, **options: Any) -> InversionResult:
    """Run a registered method by name and time it."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    start = time.perf_counter()
    result = METHODS[name](model, latents, grid, guidance, callback=callback, progress=progress, **options)
    result.seconds = time.perf_counter() - start
    return result


def solver_entry(name: str, solver: Callable[..., torch.Tensor], **settings: Any) -> None:
    """Register a plain solver function under ``name`` with fixed ``settings``.

    The entry counts NFE from the solver's callback; call-time ``options`` override ``settings``
    (e.g. ``run_method("original", ..., refine_iterations=5)``).
    """
    def run(model: Any, latents: torch.Tensor, grid: list[int], guidance: Guidance, *,
            callback: StepCallback | None = None, progress: bool = False, **options: Any) -> InversionResult:
        counter = NFECounter(callback)
        z = solver(model, latents, grid, guidance, callback=counter, progress=progress, **{**settings, **options})
        return InversionResult(z, guidance, counter.nfe)

    run.__name__ = run.__qualname__ = f"_{name.replace('-', '_')}"
    run.__doc__ = f"``{name}``: :func:`{solver.__module__}.{solver.__name__}` with {settings or 'its defaults'}."
    register(name)(run)


solver_entry("naive", invert_naive, label="source")
solver_entry("naive-destination", invert_naive, label="destination")


# The compensation solvers and baselines register themselves on import (kept in their own
# module so this file stays the registry; imported last because it uses `register`).
from . import methods_compensation  # noqa: E402,F401
