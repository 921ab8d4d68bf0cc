"""The step explorer's curve panel: every method's precomputed error curve, one PNG per frame."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from ..metrics import ErrorCurves
from ..trace import Trace
from .common import FONT, LEVEL_LABEL
from .png import png


def curve_frames(trs: Sequence[Trace], names: Sequence[str], errors: ErrorCurves,
                 frame_steps: Sequence[int], log_error: bool, dpi: int) -> list[bytes]:
    """One PNG per frame: all methods' curves (``errors.curves``), the frame's step marked.

    The curves are drawn once by matplotlib; each frame only adds a marker with PIL at the
    pixel position matplotlib reports, so 50 frames cost one figure render.
    """
    from PIL import Image, ImageDraw

    curves = errors.curves
    fig = plt.figure(figsize=(4.6, 3.0), dpi=dpi, layout="tight")
    ax = fig.add_subplot()
    for m, (tr, name, c) in enumerate(zip(trs, names, curves)):
        if c is not None:
            ax.plot(tr.t_to, c, marker="o", ms=3, lw=1.4, color=f"C{m}", label=name)
    if log_error:
        ax.set_yscale("log")
    ax.set_xlabel(LEVEL_LABEL, fontsize=FONT + 1)
    ax.set_ylabel(errors.label, fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT, frameon=False)
    fig.canvas.draw()
    base = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    H = base.height
    top, bottom = H - ax.bbox.y1, H - ax.bbox.y0
    pts: list[list[tuple[float, float] | None]] = []
    for s in frame_steps:
        row = []
        for tr, c in zip(trs, curves):
            if c is None or s >= len(tr) or not np.isfinite(c[s]):
                row.append(None)
                continue
            x, y = ax.transData.transform((tr.t_to[s], c[s]))
            row.append((float(x), float(H - y)))
        pts.append(row)
    plt.close(fig)
    frames = []
    for row in pts:
        im = base.copy()
        draw = ImageDraw.Draw(im)
        xs = [p[0] for p in row if p is not None]
        if xs:
            draw.line([(xs[0], top), (xs[0], bottom)], fill=(120, 120, 120), width=1)
        for m, p in enumerate(row):
            if p is not None:
                rgb = tuple(int(255 * v) for v in matplotlib.colors.to_rgb(f"C{m}"))
                draw.ellipse([p[0] - 5, p[1] - 5, p[0] + 5, p[1] + 5], outline=(0, 0, 0), fill=rgb, width=1)
        frames.append(png(np.asarray(im)))
    return frames


__all__ = ["curve_frames"]
