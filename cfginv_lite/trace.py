"""Record what solvers report through their per-step callback, cheaply.

A :class:`TraceRecorder` is a callback. It keeps the tensors it is asked to keep on the
device they were computed on (downsampled so a 4x64x64 SD latent costs little), and moves
everything to the CPU **once**, in :meth:`TraceRecorder.finish`, so recording never forces a
GPU sync inside the solver loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from .records import LATENT_KEYS
from .pooling import shrink_latents


@dataclass
class Trace:
    """A finished per-step record of one solver run (all on the CPU, as numpy)."""

    method: str
    step: np.ndarray                      # (S,)
    t_from: np.ndarray                    # (S,)
    t_to: np.ndarray                      # (S,)
    nfe: np.ndarray                       # (S,) cumulative network evaluations per image
    tensors: dict[str, np.ndarray]        # name -> (S, B, C, h, w)
    scalars: dict[str, list[Any]] = field(default_factory=dict)  # name -> per-step values

    def __len__(self) -> int:
        return len(self.step)

    def tensor(self, key: str) -> np.ndarray:
        """``tensors[key]`` as float32, or a ``ValueError`` saying how to record it."""
        if key not in self.tensors:
            raise ValueError(
                f"trace {self.method!r} has no {key!r} tensors (it has {sorted(self.tensors)}); "
                f"record them with TraceRecorder(keep=(..., {key!r}))"
            )
        return np.asarray(self.tensors[key], dtype=np.float32)


class TraceRecorder:
    """Callback that records a solver's steps; call :meth:`finish` to get a :class:`Trace`.

    Parameters
    ----------
    method: name shown in plots and tables.
    keep: which tensor entries of the callback dict to keep (``"latent"``, ``"noise"``, ...).
    max_size: tensors larger than ``max_size`` pixels on a side are average-pooled down.
    """

    def __init__(self, method: str = "", keep: Iterable[str] = ("latent",), max_size: int = 64) -> None:
        self.method = method
        self.keep = tuple(keep)
        self.max_size = max_size
        self._rows: list[dict[str, Any]] = []

    def __call__(self, info: dict[str, Any]) -> None:
        # The callback contract: LATENT_KEYS are latent-sized (kept only if asked, pooled);
        # every other tensor is per image and small (kept as is, on its device).
        row: dict[str, Any] = {}
        for key, value in info.items():
            if key in LATENT_KEYS:
                if key in self.keep and value is not None:
                    row[key] = shrink_latents(value.detach(), self.max_size)
            else:
                row[key] = value.detach() if isinstance(value, torch.Tensor) else value
        self._rows.append(row)

    def finish(self) -> Trace:
        """Move everything to the CPU in one pass and return the :class:`Trace`."""
        rows = self._rows
        tensors = {k: torch.stack([r[k] for r in rows]).float().cpu().numpy()
                   for k in self.keep if rows and all(k in r for r in rows)}
        skip = {"step", "t_from", "t_to", "nfe", *self.keep}
        names = [k for k in (rows[0] if rows else {}) if k not in skip]
        scalars = {k: [_to_cpu(r.get(k)) for r in rows] for k in names}
        return Trace(
            method=self.method,
            step=np.array([r.get("step", i) for i, r in enumerate(rows)]),
            t_from=np.array([r.get("t_from", np.nan) for r in rows], dtype=float),
            t_to=np.array([r.get("t_to", np.nan) for r in rows], dtype=float),
            nfe=np.array([np.max(_to_cpu(r.get("nfe", np.nan))) for r in rows], dtype=float),
            tensors=tensors,
            scalars=scalars,
        )


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float().cpu().numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
