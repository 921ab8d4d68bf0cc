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
