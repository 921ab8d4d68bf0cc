"""Small matplotlib helpers so notebook cells stay one line long."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def to_display(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` in ``[-1, 1]`` -> ``(B, H, W)`` (C=1) or ``(B, H, W, 3)`` in ``[0, 1]``."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    if x.shape[1] == 1:
        return x[:, 0]
    return np.moveaxis(x[:, :3], 1, -1)


def image_rows(rows: Sequence[torch.Tensor], row_titles: Sequence[str], col_titles: Sequence[str] | None = None,
               max_cols: int = 10, scale: float = 0.9, dpi: int = 72):
    """A grid of images: one row per tensor batch, at most ``max_cols`` columns."""
    import matplotlib.pyplot as plt

    n = min(max_cols, max(len(r) for r in rows))
    fig, axes = plt.subplots(len(rows), n, figsize=(scale * n, scale * len(rows) + 0.3), dpi=dpi, squeeze=False)
    for r, (batch, title) in enumerate(zip(rows, row_titles)):
        shown = to_display(batch[:n])
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([]); ax.set_yticks([])
            if c < len(shown):
                ax.imshow(shown[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
    fig.tight_layout(pad=0.2)
    return fig


def distribution_plot(ax, groups: dict[str, Sequence[float]], *, ylabel: str = "", log: bool = True,
                      seed: int = 0, colors: Sequence[str] | None = None):
    """Per-image values of several groups side by side: a box (median, IQR, 1.5 IQR whiskers)
    over the jittered points themselves, so the tail a mean would hide stays visible."""
    rng = np.random.default_rng(seed)
    names = list(groups)
    data = [np.asarray(groups[n], dtype=float) for n in names]
    ax.boxplot(data, positions=np.arange(len(names)), widths=0.55, showfliers=False,
               medianprops=dict(color="black", lw=1.5))
    for k, values in enumerate(data):
        color = colors[k % len(colors)] if colors else f"C{k % 10}"
        ax.scatter(k + rng.uniform(-0.22, 0.22, len(values)), values, s=6, alpha=0.45, color=color, lw=0)
    ax.set_xticks(np.arange(len(names)), names)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    return ax
