"""Measurements: reconstruction errors, collapse detection, per-step error curves.

Pooling (what a trace keeps, how a reference is matched to it) is in :mod:`cfginv_lite.pooling`.
The step views of :mod:`cfginv_lite.widgets` draw the curves of :func:`error_curves`; they
compute none themselves.

Images are in ``[-1, 1]``; image errors are reported in ``[0, 1]`` pixel units. Latent
errors (the per-step curves of :func:`error_curve`) are in latent units.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch

from .pooling import pool_to
from .trace import Trace  # for annotations; a Trace is recognised by its attributes (_is_trace)
from .validation import check_real

#: A reference trajectory: a Trace (aligned by noise level), an array shaped like the trace's
#: tensors ``(S, B, C, h, w)`` (aligned by step), or ``{level: (B, C, h, w)}``.
Reference = Union["Trace", np.ndarray, Mapping[int, Any]]


# --------------------------------------------------------------------------- images
def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-item root-mean-square difference, shape ``(B,)``, in the tensors' own units."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).pow(2).flatten(1).mean(1).sqrt()


def image_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image RMSE in ``[0, 1]`` pixel units of two ``[-1, 1]`` images (half the [-1,1] RMSE)."""
    return rmse(a, b) / 2


def psnr(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-image PSNR in dB for ``[-1, 1]`` images: ``20 log10(1 / RMSE_[0,1])``."""
    return 20 * torch.log10(1.0 / image_rmse(a, b).clamp_min(eps))


def is_collapsed(images: torch.Tensor, reference_std: float | torch.Tensor, ratio: float = 0.25) -> torch.Tensor:
    """Flag "grey image" regenerations: per-image std below ``ratio * reference_std``.

    The seed reports that without ``tless`` a regeneration sometimes "diverges into a
    completely grey image"; such an image has almost no contrast left. ``reference_std``
    is the per-image pixel std typical of the data (a float, or ``(B,)`` per image).
    Returns a ``(B,)`` bool tensor.
    """
    if not isinstance(images, torch.Tensor) or images.ndim < 2:
        raise ValueError("images must be a tensor (B, ...)")
    check_real("ratio", ratio, low=0.0, low_open=True)
    ref = torch.as_tensor(reference_std, dtype=torch.float32, device=images.device)
    if not torch.isfinite(ref).all() or (ref <= 0).any():
        raise ValueError("reference_std must be positive and finite")
    std = images.detach().float().flatten(1).std(dim=1, unbiased=False)
    return std < ratio * ref


# --------------------------------------------------------------------------- per-step curves
def _is_trace(x: Any) -> bool:
    return hasattr(x, "tensors") and hasattr(x, "t_to") and hasattr(x, "tensor")


def _levels_of(reference: "Trace", key: str) -> dict[int, np.ndarray]:
    """``{noise level: latent (B, C, h, w)}`` from a reference trace (``latent_prev`` adds its start)."""
    levels: dict[int, np.ndarray] = {}
    lat = reference.tensor(key)
    if key == "latent" and "latent_prev" in reference.tensors:
        prev = np.asarray(reference.tensors["latent_prev"], dtype=np.float32)
        for j, t in enumerate(reference.t_from):
            levels[int(t)] = prev[j]
    for j, t in enumerate(reference.t_to):
        levels[int(t)] = lat[j]
    return levels


def align_reference(trace: "Trace", reference: Reference | None, key: str = "latent") -> np.ndarray | None:
    """The reference latents matching ``trace.tensors[key]`` step by step, ``(S, B, C, h, w)``.

    * ``Trace``: aligned by noise level (the reference latent at each step's ``t_to``), so an
      inversion trace (levels going up) can be compared with a sampling trace (levels going
      down). Levels the reference lacks give NaN.
    * array ``(S, B, C, H, W)`` (or ``(S, C, H, W)``): taken step by step; larger spatial sizes
      are average-pooled to the trace's size by an integer factor.
    * ``{level: (B, C, H, W)}``: looked up by each step's ``t_to``.
    """
    if reference is None:
        return None
    x = trace.tensor(key)
    S, B, C, h, w = x.shape
    if _is_trace(reference):
        reference = _levels_of(reference, key)
    if isinstance(reference, Mapping):
        out = np.full_like(x, np.nan)
        for i, t in enumerate(trace.t_to):
            ref = reference.get(int(t))
            if ref is not None:
                ref = pool_to(np.asarray(ref, dtype=np.float32), (h, w))
                out[i] = np.broadcast_to(ref.reshape(-1, C, h, w), (B, C, h, w))
        return out
    ref = pool_to(np.asarray(reference, dtype=np.float32), (h, w))
    if ref.ndim == 4:
        ref = ref[:, None]
    if ref.ndim != 5 or ref.shape[0] != S or ref.shape[2] != C or ref.shape[1] not in (1, B):
        raise ValueError(f"reference of shape {ref.shape} does not match trace {key!r} of shape {x.shape}")
    return np.broadcast_to(ref, x.shape)


def step_rmse(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-step RMSE per image over all entries, batch-averaged, ``(S,)``; NaN where there is no reference."""
    d = (x - ref).reshape(*x.shape[:2], -1)
    per_image = np.sqrt(np.mean(d ** 2, axis=-1))  # (S, B)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps: "mean of empty slice"
        return np.nanmean(per_image, axis=1)


def error_curve(trace: "Trace", reference: Reference, key: str = "latent") -> np.ndarray:
    """Per-step RMSE between ``trace`` and ``reference``, averaged over the batch: shape ``(S,)``.

    RMSE is taken per image over all latent entries, ``sqrt(mean((z - z_ref)^2))`` in latent
    units, then averaged over images; steps without a reference are NaN.
    """
    ref = align_reference(trace, reference, key)
    if ref is None:
        raise ValueError("error_curve needs a reference")
    return step_rmse(trace.tensor(key), ref)


def solver_residual(trace: "Trace") -> np.ndarray | None:
    """The solver's own per-step residual (compensated solvers), batch-averaged, or ``None``.

    Steps where no image has a known residual are NaN.
    """
    values = trace.scalars.get("residual")
    if not values or all(v is None for v in values):
        return None
    out = []
    for v in values:
        arr = np.asarray(np.nan if v is None else v, dtype=float)
        out.append(float(np.nanmean(arr)) if np.isfinite(arr).any() else math.nan)
    return np.array(out)


#: Axis labels of the two kinds of per-step curve (:attr:`ErrorCurves.label`).
CURVE_LABELS = {"RMSE": "RMSE vs reference (latent units)", "residual": "solver residual (latent units)"}


@dataclass(frozen=True)
class ErrorCurves:
    """Per-step error curves of some traces, one entry per trace, made by :func:`error_curves`.

    ``curves[m]`` is the ``(S_m,)`` curve of trace ``m`` (``None`` where it has none);
    ``references[m]`` the reference latents aligned to it step by step (:func:`align_reference`,
    ``(S_m, B, C, h, w)``, ``None`` without a reference), from which the views draw error maps.
    ``measure`` says what the curves are: ``"RMSE"`` against the reference, or the solver's own
    ``"residual"`` (when no trace has a reference). ``key`` is the trace tensor they measure.
    """

    curves: tuple[np.ndarray | None, ...]
    references: tuple[np.ndarray | None, ...]
    measure: Literal["RMSE", "residual"]
    key: str = "latent"

    @property
    def label(self) -> str:
        """The curves' axis label, with their unit."""
        return CURVE_LABELS[self.measure]

    @property
    def has_reference(self) -> bool:
        """Whether any trace was compared with a reference (the views then add error maps)."""
        return any(r is not None for r in self.references)

    @property
    def has_curve(self) -> bool:
        """Whether any trace has a curve to plot."""
        return any(c is not None for c in self.curves)


def _trace_list(traces: "Trace | Sequence[Trace]") -> list["Trace"]:
    if _is_trace(traces):
        return [traces]  # type: ignore[list-item]
    if isinstance(traces, (str, bytes, Mapping)) or not hasattr(traces, "__iter__"):
        raise ValueError(f"traces must be a Trace or a list of Traces, got {type(traces).__name__}")
    out = list(traces)
    if not out or not all(_is_trace(tr) for tr in out):
        raise ValueError("traces must be a non-empty list of Traces (TraceRecorder.finish())")
    return out


def error_curves(traces: "Trace | Sequence[Trace]", reference: Reference | list[Reference | None] | None = None,
                 key: str = "latent") -> ErrorCurves:
    """The per-step error curves of ``traces``, ready for the step views of :mod:`cfginv_lite.widgets`.

    ``reference`` is one reference for all traces, or a ``list`` with one per trace (``None``
    for a trace without one); each is matched to its trace by :func:`align_reference`. With
    any reference, a trace's curve is its :func:`error_curve` (``None`` for a trace without a
    reference); without any, it is the trace's :func:`solver_residual` (``None`` if it has none).
    """
    trs = _trace_list(traces)
    if isinstance(reference, list):
        if len(reference) != len(trs):
            raise ValueError(f"{len(reference)} references for {len(trs)} traces")
        refs = [align_reference(tr, r, key) for tr, r in zip(trs, reference)]
    else:
        refs = [align_reference(tr, reference, key) for tr in trs]
    if any(r is not None for r in refs):
        curves = [None if r is None else step_rmse(tr.tensor(key), r) for tr, r in zip(trs, refs)]
        return ErrorCurves(tuple(curves), tuple(refs), "RMSE", key)
    return ErrorCurves(tuple(solver_residual(tr) for tr in trs), tuple(refs), "residual", key)


__all__ = ["CURVE_LABELS", "ErrorCurves", "Reference", "align_reference", "error_curve", "error_curves", "image_rmse",
           "is_collapsed", "psnr", "rmse", "solver_residual", "step_rmse"]
