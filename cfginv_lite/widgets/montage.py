"""The static step montage: a plain matplotlib figure (renders on GitHub, in nbval and on paper)."""
from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

from ..metrics import ErrorCurves, Reference
from ..trace import Trace
from ..validation import check_int, check_positive
from .common import DPI, FONT, LEVEL_LABEL, as_traces, check_view_args, curves_to_draw, method_names, pick
from .png import ChannelMode, display, robust_max, to_rgb8


def _row_label(name: str, what: str, row_inches: float) -> str:
    """A montage row label (rotated, beside one row of cells): the method name wrapped at hyphens or
    spaces when it would be longer than the row is high (else it runs into the next row's label),
    then what the row shows. Names that fit are left as they are."""
    width = max(4, int(row_inches * 72 / (0.6 * FONT)))  # characters of about 0.6 em that fit the row
    lines = textwrap.wrap(name, width, break_on_hyphens=True, break_long_words=False) or [name]
    return "\n".join([*lines, what])


def _columns(steps: Sequence[int] | None, n_steps: int, max_columns: int) -> list[int]:
    """The step indices shown as columns: ``steps`` checked, or up to ``max_columns`` evenly spaced."""
    if steps is not None and (isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__")):
        raise ValueError(f"steps must be a list of step indices, got {type(steps).__name__}")
    cols = list(steps) if steps is not None else pick(n_steps, max_columns)
    if not cols:
        raise ValueError("no steps selected")
    cols = [check_int("steps", s) for s in cols]  # whole step indices: 1.5 is an error, not step 1
    if any(not 0 <= s < n_steps for s in cols):
        raise ValueError(f"steps must lie in [0, {n_steps - 1}], got {list(cols)}")
    return cols


def _draw_curves(ax: plt.Axes, trs: Sequence[Trace], names: Sequence[str], errors: ErrorCurves,
                 cols: Sequence[int], log_error: bool) -> None:
    """One axes, one precomputed curve per method (naive and compensated compare directly)."""
    for m, (tr, name, c) in enumerate(zip(trs, names, errors.curves)):
        if c is None:
            continue
        ax.plot(tr.t_to, c, marker="o", ms=3, color=f"C{m}", label=name)
        sel = [s for s in cols if s < len(tr)]
        ax.plot(tr.t_to[sel], c[sel], "o", ms=7, mfc="none", color="k")
    if log_error:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel(LEVEL_LABEL, fontsize=FONT)
    ax.set_ylabel(errors.label, fontsize=FONT)
    ax.set_title("error per step (circles: steps shown)", fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT, frameon=False)


def step_montage(
    traces: Trace | Sequence[Trace],
    reference: Reference | list[Reference | None] | None = None,
    steps: Sequence[int] | None = None,
    *,
    curves: ErrorCurves | None = None,
    key: str = "latent",
    image: int = 0,
    max_columns: int = 6,
    decode: Callable[[np.ndarray], np.ndarray] | None = None,
    channels: ChannelMode = "auto",
    log_error: bool = False,
    dpi: int = DPI,
    cell_inches: float = 1.0,
) -> Figure:
    """Static montage: rows = methods, columns = steps, plus an error-vs-step curve per method.

    For each method, one row shows ``trace.tensors[key]`` (or ``decode`` of it) for image
    ``image`` at the selected ``steps`` (indices into the trace; default: up to ``max_columns``
    evenly spaced, first and last included). The curves are ``curves``
    (:func:`cfginv_lite.metrics.error_curves` of the traces), or, for convenience, that function's
    result for ``reference`` (give one or the other). With a reference, a second row per method
    shows the error map ``latent - reference`` (shared, symmetric colour scale) and the last
    column plots the per-step RMSE against the noise level; without one, the curve shows the
    solver's own residual if the trace has one.

    ``decode`` maps latents ``(B, C, h, w)`` to images ``(B, C', H, W)`` in ``[-1, 1]``
    (e.g. ``lambda z: z.clip(-1, 1)`` for the digits model). Returns a closed figure (it is
    displayed once, as the cell's value, and not again by pyplot).
    """
    trs = as_traces(traces)
    image = check_view_args(trs, key=key, image=image, channels=channels, log_error=log_error, dpi=dpi,
                            decode=decode)
    max_columns = check_int("max_columns", max_columns, minimum=1)
    cell_inches = check_positive("cell_inches", cell_inches, high=10.0)
    names = method_names(trs)
    errors = curves_to_draw(trs, reference, curves, key)
    refs, has_ref, has_curve = errors.references, errors.has_reference, errors.has_curve
    cols = _columns(steps, max(len(tr) for tr in trs), max_columns)

    rows_per = 2 if has_ref else 1
    n_rows = len(trs) * rows_per
    width_ratios = [1.0] * len(cols) + ([0.7, 3.0] if has_curve else [])
    height_ratios = [1.0] * n_rows + ([0.12] if has_ref else [])
    # Fixed margins in inches (row labels left, titles top, curve labels bottom), cells square.
    left, right, top, bottom = 1.0, 0.15, 0.55, 0.65
    fig_w = cell_inches * sum(width_ratios) * 1.08 + left + right
    fig_h = cell_inches * sum(height_ratios) * 1.15 + top + bottom
    # layout="none": the GridSpec margins above place everything (constrained layout would move them).
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi, layout="none")
    gs = GridSpec(len(height_ratios), len(width_ratios), figure=fig, width_ratios=width_ratios,
                  height_ratios=height_ratios, wspace=0.08, hspace=0.15, left=left / fig_w,
                  right=1 - right / fig_w, top=1 - top / fig_h, bottom=bottom / fig_h)

    lat = [tr.tensor(key) for tr in trs]
    shown = [decode(z) if decode is not None else z for z in lat]
    vmax_img = 1.0 if decode is not None else max(robust_max(s[:, image]) for s in shown)
    diffs = [None if r is None else z - r for z, r in zip(lat, refs)]  # the error maps drawn
    vmax_err = max((robust_max(d[:, image]) for d in diffs if d is not None), default=1.0) or 1.0
    err_im = None

    for m, (tr, name) in enumerate(zip(trs, names)):
        r0 = m * rows_per
        for j, s in enumerate(cols):
            ax = fig.add_subplot(gs[r0, j])
            ax.set_xticks([]), ax.set_yticks([])
            if s < len(tr):
                img = display(shown[m][s, image], channels)
                if img.ndim == 3:  # RGB: imshow ignores vmin/vmax, so scale here
                    img = to_rgb8(img, -vmax_img, vmax_img, "gray")
                ax.imshow(img, cmap="gray", vmin=-vmax_img, vmax=vmax_img, interpolation="nearest")
                if m == 0:
                    ax.set_title(f"step {s}\nt {tr.t_from[s]:.0f}→{tr.t_to[s]:.0f}", fontsize=FONT)
            if j == 0:
                ax.set_ylabel(_row_label(name, "decoded" if decode else key, cell_inches), fontsize=FONT,
                              color=f"C{m}")
            if has_ref:
                ax = fig.add_subplot(gs[r0 + 1, j])
                ax.set_xticks([]), ax.set_yticks([])
                if s < len(tr) and diffs[m] is not None:
                    err = diffs[m][s, image]
                    err_im = ax.imshow(err.mean(axis=0) if err.shape[0] != 1 else err[0], cmap="RdBu_r",
                                       vmin=-vmax_err, vmax=vmax_err, interpolation="nearest")
                if j == 0:
                    ax.set_ylabel(_row_label(name, "error", cell_inches), fontsize=FONT, color=f"C{m}")
    if has_curve:
        _draw_curves(fig.add_subplot(gs[:n_rows, -1]), trs, names, errors, cols, log_error)
    if err_im is not None:
        cax = fig.add_subplot(gs[-1, : max(1, len(cols) // 2 + 1)])
        cb = fig.colorbar(err_im, cax=cax, orientation="horizontal")
        cb.set_label(f"error map: {key} − reference (latent units)", fontsize=FONT)
        cb.ax.tick_params(labelsize=FONT)
    plt.close(fig)  # shown once as the cell's value, never again by the inline backend
    return fig


__all__ = ["step_montage"]
