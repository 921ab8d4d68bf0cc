"""Average pooling of latents and arrays: what a trace keeps, and how a reference is matched to it.

Below :mod:`cfginv_lite.trace` (the recorder shrinks latents with :func:`shrink_latents`) and
:mod:`cfginv_lite.metrics` (references are pooled to a trace's size with :func:`pool_to`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def shrink_latents(x: torch.Tensor, max_size: int) -> torch.Tensor:
    """Average-pool ``(B, C, H, W)`` by the integer factor ``ceil(max(H, W) / max_size)`` (on its device)."""
    if x.ndim == 4 and max(x.shape[-2:]) > max_size:
        factor = int(np.ceil(max(x.shape[-2:]) / max_size))
        x = F.avg_pool2d(x.float(), factor)
    return x.clone()


def shrink_array(x: np.ndarray | None, max_px: int) -> np.ndarray | None:
    """Average-pool ``x[..., H, W]`` to at most ``max_px`` a side (remainder cropped), numpy."""
    if x is None:
        return None
    H, W = x.shape[-2:]
    f = int(np.ceil(max(H, W) / max_px))
    if f <= 1:
        return x
    x = x[..., : H - H % f, : W - W % f]
    return x.reshape(*x.shape[:-2], x.shape[-2] // f, f, x.shape[-1] // f, f).mean(axis=(-3, -1))


def pool_to(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Average-pool ``x[..., H, W]`` to ``hw`` when the factor is an integer (as TraceRecorder does)."""
    H, W = x.shape[-2:]
    h, w = hw
    if (H, W) == (h, w):
        return x
    if H % h or W % w or H // h != W // w:
        raise ValueError(f"reference spatial size {(H, W)} cannot be pooled to the trace's {(h, w)}")
    f = H // h
    return x.reshape(*x.shape[:-2], h, f, w, f).mean(axis=(-3, -1))


__all__ = ["pool_to", "shrink_array", "shrink_latents"]
