"""Preservation proxies for handwritten digits: how much of the source's style an edit keeps.

:func:`style_features` reads stroke thickness (ink), slant and position (centroid) of a digit
image; :func:`style_distance` compares two batches feature by feature in units of
:func:`style_scales` (one interquartile range over reference digits). Notebook 06 and
``benchmarks/editing.py`` compare an edit (:func:`cfginv_lite.editing.edit`) with its source
against a control of unrelated images. (:mod:`cfginv_lite.style` is the figure style.)
"""
from __future__ import annotations

import numpy as np
import torch

STYLE_FEATURES: tuple[str, ...] = ("ink", "slant", "row", "column")


def style_features(images: torch.Tensor) -> np.ndarray:
    """Per image ``(B, 4)``: ink, slant, centroid row, centroid column of a digit image.

    Images ``(B, 1, H, W)`` in ``[-1, 1]`` (ink = bright); ``p = (x + 1) / 2`` is the ink
    density. *ink*: mean density (stroke thickness and length); *row*, *column*: the
    centroid in pixels; *slant*: ``mu11 / mu02`` from the central second moments (the
    horizontal shift per row of a sheared stroke, as in the classic deskewing of digit
    images: x' = x - slant * (y - row)). Grey background counts as half ink, so compare
    images of one kind.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be a tensor (B, 1, H, W), got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    p = ((images.detach().double().cpu().clamp(-1, 1) + 1) / 2)[:, 0]
    h, w = p.shape[-2:]
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    mass = p.sum((1, 2)).clamp_min(1e-9)
    row = (p * ys).sum((1, 2)) / mass
    col = (p * xs).sum((1, 2)) / mass
    dy, dx = ys - row.view(-1, 1, 1), xs - col.view(-1, 1, 1)
    mu11 = (p * dx * dy).sum((1, 2)) / mass
    mu02 = (p * dy * dy).sum((1, 2)) / mass
    slant = mu11 / mu02.clamp_min(1e-9)
    return torch.stack([p.mean((1, 2)), slant, row, col], 1).numpy()


def style_scales(reference: torch.Tensor) -> np.ndarray:
    """Interquartile range of each style feature over ``reference`` images (the units of :func:`style_distance`)."""
    f = style_features(reference)
    q25, q75 = np.percentile(f, [25, 75], axis=0)
    return q75 - q25


def style_distance(a: torch.Tensor, b: torch.Tensor, scales: np.ndarray) -> np.ndarray:
    """Per image: ``sqrt(mean_k ((f_k(a) - f_k(b)) / scale_k)^2)`` over the four style features.

    0 means the same ink, slant and position; 1 means a typical (one IQR) difference per
    feature. Compare an edit with its source against a control of unrelated images.
    """
    fa, fb = style_features(a), style_features(b)
    if fa.shape != fb.shape:
        raise ValueError(f"style_distance needs two batches of one size, got {len(fa)} and {len(fb)}")
    scales = np.asarray(scales, dtype=np.float64)
    if scales.shape != (len(STYLE_FEATURES),) or not (scales > 0).all():
        raise ValueError(f"scales must be {len(STYLE_FEATURES)} positive numbers (style_scales), got {scales}")
    return np.sqrt((((fa - fb) / scales) ** 2).mean(1))


__all__ = ["STYLE_FEATURES", "style_distance", "style_features", "style_scales"]
