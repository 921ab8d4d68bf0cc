"""Step-by-step views of solver traces: a static montage and a kernel-free widget explorer.

Both views take one or more :class:`~cfginv_lite.trace.Trace` (recorded by a
:class:`~cfginv_lite.trace.TraceRecorder` passed as a solver's ``callback``) and, optionally,
a *reference* trajectory: the latents the trace should have produced, e.g. the true sampling
trajectory of a generated image. The error at a step is the RMSE between the trace's latent
and the reference latent **at the same noise level**.

* :func:`step_montage` returns a plain matplotlib figure: it renders on GitHub, in nbval and
  on paper.
* :func:`step_explorer` returns an ipywidgets view whose frames are pre-rendered PNGs inside
  ``Stack`` containers, switched by ``jslink``-ed controls. Nothing runs in the kernel when the
  slider moves, so the view keeps working from a notebook saved with its widget state
  (``tools/execute_notebooks.py`` saves it): nbviewer, the static HTML of
  ``tools/build_html.py`` (widget renderer pinned, loaded from a CDN or bundled), and
  JupyterLab with a kernel but no cell run, once the notebook is trusted (JupyterLab renders
  widget outputs of untrusted notebooks as their text repr). In that last case ipywidgets marks
  every widget no kernel owns with a red "disconnected" chain icon; the explorer hides those
  icons inside itself, since its controls do work without the kernel.

In Colab, call :func:`enable_colab_widgets` once (the notebooks' setup cell does).
"""
from __future__ import annotations

import html
import io
import textwrap
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

# Measurements live in metrics; align_reference, error_curve and solver_residual stay importable
# from here because the notebooks call them as widgets.<name>.
from .metrics import Reference, align_reference, error_curve, solver_residual, step_rmse
from .pooling import shrink_array
from .trace import Trace
from .validation import check_bool, check_choice, check_int, check_positive
ChannelMode = Literal["auto", "mean", "rgb"]
CHANNEL_MODES: tuple[str, ...] = ("auto", "mean", "rgb")

ERROR_LABEL = "RMSE vs reference"
LEVEL_LABEL = "noise level t (after the step)"
_DPI = 100  # the course style (cfginv_lite.style): readable at 100% zoom, fonts >= 9 pt
_FONT = 9  # smallest font size in the views, points


# --------------------------------------------------------------------------- data helpers
def _as_traces(traces: Trace | Sequence[Trace]) -> list[Trace]:
    if not isinstance(traces, Trace) and (isinstance(traces, (str, bytes)) or not hasattr(traces, "__iter__")):
        raise ValueError(f"traces must be a Trace or a list of Traces (TraceRecorder.finish()), "
                         f"got {type(traces).__name__}")
    out = [traces] if isinstance(traces, Trace) else list(traces)
    if not out:
        raise ValueError("need at least one Trace")
    for tr in out:
        if not isinstance(tr, Trace):
            raise ValueError(f"expected Trace objects (TraceRecorder.finish()), got {type(tr).__name__}")
    return out


def _check_view_args(trs: Sequence[Trace], *, key: Any, image: Any, channels: Any, log_error: Any, dpi: Any,
                     decode: Any) -> int:
    """The arguments both views share; returns ``image`` as a checked int (negative counts from the end)."""
    if not isinstance(key, str):
        raise ValueError(f"key must be the name of a recorded tensor (a string), got {type(key).__name__}")
    batch = min(np.shape(tr.tensor(key))[1] for tr in trs)  # (steps, B, C, h, w); a missing key: Trace's message
    image = check_int("image", image, minimum=-batch, maximum=batch - 1)
    check_choice("channels", channels, CHANNEL_MODES)
    check_bool("log_error", log_error)
    check_int("dpi", dpi, minimum=10, maximum=1000)
    if decode is not None and not callable(decode):
        raise ValueError(f"decode must be a function of latents (or None), got {type(decode).__name__}")
    return image


def _method_names(traces: Sequence[Trace]) -> list[str]:
    """Trace names, made unique so they can label rows and selector options."""
    names: list[str] = []
    for i, tr in enumerate(traces):
        name = tr.method or f"trace {i}"
        base, k = name, 2
        while name in names:
            name, k = f"{base} ({k})", k + 1
        names.append(name)
    return names


def _row_label(name: str, what: str, row_inches: float) -> str:
    """A montage row label (rotated, beside one row of cells): the method name wrapped at hyphens or
    spaces when it would be longer than the row is high (else it runs into the next row's label),
    then what the row shows. Names that fit are left as they are."""
    width = max(4, int(row_inches * 72 / (0.6 * _FONT)))  # characters of about 0.6 em that fit the row
    lines = textwrap.wrap(name, width, break_on_hyphens=True, break_long_words=False) or [name]
    return "\n".join([*lines, what])


def _curves(traces: Sequence[Trace], refs: Sequence[np.ndarray | None], key: str
            ) -> tuple[list[np.ndarray | None], str]:
    """Error-vs-step curves for the views: vs reference if given, else the solver residual."""
    if any(r is not None for r in refs):
        curves = [None if r is None else step_rmse(tr.tensor(key), r) for tr, r in zip(traces, refs)]
        return curves, f"{ERROR_LABEL} (latent units)"
    curves = [solver_residual(tr) for tr in traces]
    return curves, "solver residual (latent units)"


def _resolve_refs(traces: Sequence[Trace], reference: Reference | list[Reference | None] | None,
                  key: str) -> list[np.ndarray | None]:
    """One reference for all traces, or a ``list`` of references, one per trace."""
    if isinstance(reference, list):
        if len(reference) != len(traces):
            raise ValueError(f"{len(reference)} references for {len(traces)} traces")
        return [align_reference(tr, r, key) for tr, r in zip(traces, reference)]
    return [align_reference(tr, reference, key) for tr in traces]


def _pick(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices in ``range(n)`` that include the first and the last."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


# --------------------------------------------------------------------------- image helpers
def _display(x: np.ndarray, channels: ChannelMode = "auto") -> np.ndarray:
    """``(C, h, w)`` -> ``(h, w)`` grey or ``(h, w, 3)`` RGB (first 3 channels, e.g. SD's 4)."""
    C = x.shape[0]
    if C == 1:
        return x[0]
    if channels == "mean" or (channels == "auto" and C == 2):
        return x.mean(axis=0)
    return np.moveaxis(x[:3], 0, -1)


def _to_rgb8(img: np.ndarray, vmin: float, vmax: float, cmap: str) -> np.ndarray:
    """Scale to [0, 1] with fixed limits (comparable across frames) and colour-map greys."""
    span = vmax - vmin if vmax > vmin else 1.0
    v = np.clip((np.nan_to_num(img, nan=vmin) - vmin) / span, 0, 1)
    if v.ndim == 2:
        v = matplotlib.colormaps[cmap](v)[..., :3]
    return (v * 255 + 0.5).astype(np.uint8)


def _png(rgb: np.ndarray, zoom: int = 1) -> bytes:
    """PNG bytes, upsampled with nearest neighbour (8x8 latents stay crisp), palette-compressed."""
    from PIL import Image

    im = Image.fromarray(rgb)
    if zoom > 1:
        im = im.resize((im.width * zoom, im.height * zoom), Image.NEAREST)
    im = im.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _image(W: Any, png: bytes, layout: Any) -> Any:
    """An ``ipywidgets.Image`` at its natural pixel size: without explicit width/height, flex
    boxes stretch it to their height and distort or crop it."""
    w, h = _png_size(png)
    return W.Image(value=png, format="png", width=str(w), height=str(h), layout=layout)


def _robust_max(x: np.ndarray) -> float:
    finite = np.abs(x[np.isfinite(x)])
    return float(np.percentile(finite, 99.5)) if finite.size else 1.0


# --------------------------------------------------------------------------- static montage
def step_montage(
    traces: Trace | Sequence[Trace],
    reference: Reference | list[Reference | None] | None = None,
    steps: Sequence[int] | None = None,
    *,
    key: str = "latent",
    image: int = 0,
    max_columns: int = 6,
    decode: Callable[[np.ndarray], np.ndarray] | None = None,
    channels: ChannelMode = "auto",
    log_error: bool = False,
    dpi: int = _DPI,
    cell_inches: float = 1.0,
) -> Figure:
    """Static montage: rows = methods, columns = steps, plus an error-vs-step curve per method.

    For each method, one row shows ``trace.tensors[key]`` (or ``decode`` of it) for image
    ``image`` at the selected ``steps`` (indices into the trace; default: up to ``max_columns``
    evenly spaced, first and last included). With a ``reference``, a second row shows the
    error map ``latent - reference`` (shared, symmetric colour scale) and the last column plots
    the per-step RMSE (:func:`error_curve`) against the noise level. Without one, the curve
    shows the solver's own residual if the trace has one.

    ``decode`` maps latents ``(B, C, h, w)`` to images ``(B, C', H, W)`` in ``[-1, 1]``
    (e.g. ``lambda z: z.clip(-1, 1)`` for the digits model). Returns a closed figure (it is
    displayed once, as the cell's value, and not again by pyplot).
    """
    trs = _as_traces(traces)
    image = _check_view_args(trs, key=key, image=image, channels=channels, log_error=log_error, dpi=dpi,
                             decode=decode)
    max_columns = check_int("max_columns", max_columns, minimum=1)
    cell_inches = check_positive("cell_inches", cell_inches, high=10.0)
    names = _method_names(trs)
    refs = _resolve_refs(trs, reference, key)
    curves, ylabel = _curves(trs, refs, key)
    has_ref = any(r is not None for r in refs)
    has_curve = any(c is not None for c in curves)
    n_steps = max(len(tr) for tr in trs)
    if steps is not None and (isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__")):
        raise ValueError(f"steps must be a list of step indices, got {type(steps).__name__}")
    cols = list(steps) if steps is not None else _pick(n_steps, max_columns)
    if not cols:
        raise ValueError("no steps selected")
    cols = [check_int("steps", s) for s in cols]  # whole step indices: 1.5 is an error, not step 1
    if any(not 0 <= s < n_steps for s in cols):
        raise ValueError(f"steps must lie in [0, {n_steps - 1}], got {list(cols)}")

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
    vmax_img = 1.0 if decode is not None else max(_robust_max(s[:, image]) for s in shown)
    diffs = [None if r is None else z - r for z, r in zip(lat, refs)]
    vmax_err = max((_robust_max(d[:, image]) for d in diffs if d is not None), default=1.0) or 1.0
    err_im = None

    for m, (tr, name) in enumerate(zip(trs, names)):
        r0 = m * rows_per
        for j, s in enumerate(cols):
            ax = fig.add_subplot(gs[r0, j])
            ax.set_xticks([]), ax.set_yticks([])
            if s < len(tr):
                img = _display(shown[m][s, image], channels)
                if img.ndim == 3:  # RGB: imshow ignores vmin/vmax, so scale here
                    img = _to_rgb8(img, -vmax_img, vmax_img, "gray")
                ax.imshow(img, cmap="gray", vmin=-vmax_img, vmax=vmax_img, interpolation="nearest")
                if m == 0:
                    ax.set_title(f"step {s}\nt {tr.t_from[s]:.0f}→{tr.t_to[s]:.0f}", fontsize=_FONT)
            if j == 0:
                ax.set_ylabel(_row_label(name, "decoded" if decode else key, cell_inches), fontsize=_FONT,
                              color=f"C{m}")
            if has_ref:
                ax = fig.add_subplot(gs[r0 + 1, j])
                ax.set_xticks([]), ax.set_yticks([])
                if s < len(tr) and diffs[m] is not None:
                    err = diffs[m][s, image]
                    err_im = ax.imshow(err.mean(axis=0) if err.shape[0] != 1 else err[0], cmap="RdBu_r",
                                       vmin=-vmax_err, vmax=vmax_err, interpolation="nearest")
                if j == 0:
                    ax.set_ylabel(_row_label(name, "error", cell_inches), fontsize=_FONT, color=f"C{m}")
    if has_curve:  # one axes, one curve per method: naive and compensated compare directly
        ax = fig.add_subplot(gs[:n_rows, -1])
        for m, (tr, name, c) in enumerate(zip(trs, names, curves)):
            if c is None:
                continue
            ax.plot(tr.t_to, c, marker="o", ms=3, color=f"C{m}", label=name)
            sel = [s for s in cols if s < len(tr)]
            ax.plot(tr.t_to[sel], c[sel], "o", ms=7, mfc="none", color="k")
        if log_error:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel(LEVEL_LABEL, fontsize=_FONT)
        ax.set_ylabel(ylabel, fontsize=_FONT)
        ax.set_title("error per step (circles: steps shown)", fontsize=_FONT)
        ax.tick_params(labelsize=_FONT)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=_FONT, frameon=False)
    if err_im is not None:
        cax = fig.add_subplot(gs[-1, : max(1, len(cols) // 2 + 1)])
        cb = fig.colorbar(err_im, cax=cax, orientation="horizontal")
        cb.set_label(f"error map: {key} − reference (latent units)", fontsize=_FONT)
        cb.ax.tick_params(labelsize=_FONT)
    plt.close(fig)  # shown once as the cell's value, never again by the inline backend
    return fig


# --------------------------------------------------------------------------- widget explorer
def _curve_frames(trs: Sequence[Trace], names: Sequence[str], curves: Sequence[np.ndarray | None],
                  frame_steps: Sequence[int], ylabel: str, log_error: bool, dpi: int) -> list[bytes]:
    """One PNG per frame: all methods' curves, the frame's step marked.

    The curves are drawn once by matplotlib; each frame only adds a marker with PIL at the
    pixel position matplotlib reports, so 50 frames cost one figure render.
    """
    from PIL import Image, ImageDraw

    fig = plt.figure(figsize=(4.6, 3.0), dpi=dpi, layout="tight")
    ax = fig.add_subplot()
    for m, (tr, name, c) in enumerate(zip(trs, names, curves)):
        if c is not None:
            ax.plot(tr.t_to, c, marker="o", ms=3, lw=1.4, color=f"C{m}", label=name)
    if log_error:
        ax.set_yscale("log")
    ax.set_xlabel(LEVEL_LABEL, fontsize=_FONT + 1)
    ax.set_ylabel(ylabel, fontsize=_FONT + 1)
    ax.tick_params(labelsize=_FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=_FONT, frameon=False)
    fig.canvas.draw()
    base = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    H = base.height
    top, bottom = H - ax.bbox.y1, H - ax.bbox.y0
    pts: list[list[tuple[float, float] | None]] = []
    for f, s in enumerate(frame_steps):
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
    for f, s in enumerate(frame_steps):
        im = base.copy()
        draw = ImageDraw.Draw(im)
        xs = [p[0] for p in pts[f] if p is not None]
        if xs:
            draw.line([(xs[0], top), (xs[0], bottom)], fill=(120, 120, 120), width=1)
        for m, p in enumerate(pts[f]):
            if p is not None:
                rgb = tuple(int(255 * v) for v in matplotlib.colors.to_rgb(f"C{m}"))
                draw.ellipse([p[0] - 5, p[1] - 5, p[0] + 5, p[1] + 5], outline=(0, 0, 0), fill=rgb, width=1)
        frames.append(_png(np.asarray(im)))
    return frames


_EXPLORER_CLASS = "cfginv-step-explorer"


class StepExplorer:
    """Handles to the parts of a :func:`step_explorer` view (for tests and customisation).

    ``widget`` is the ipywidgets box to display; displaying the explorer itself shows it.
    """

    def __init__(self, widget: Any, slider: Any, play: Any, selector: Any, stacks: list[Any],
                 links: list[Any], frame_steps: list[int], methods: list[str]) -> None:
        self.widget, self.slider, self.play, self.selector = widget, slider, play, selector
        self.stacks, self.links, self.frame_steps, self.methods = stacks, links, frame_steps, methods

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        # A short, deterministic text/plain: nbval compares it (and skips the widget-view JSON).
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        return f"StepExplorer(methods={self.methods!r}, frames={len(self.frame_steps)})"


def step_explorer(
    traces: Trace | Sequence[Trace],
    reference: Reference | list[Reference | None] | None = None,
    *,
    key: str = "latent",
    image: int = 0,
    max_frames: int = 50,
    decode: Callable[[np.ndarray], np.ndarray] | None = None,
    channels: ChannelMode = "auto",
    panel_px: int = 112,
    max_latent_px: int = 32,
    log_error: bool = False,
    interval_ms: int = 600,
    dpi: int = _DPI,
) -> StepExplorer:
    """Interactive step explorer that needs no kernel: pre-rendered frames switched in the browser.

    Per method and frame one PNG shows, side by side, the ``key`` latent (and ``decode`` of it,
    if given), the error map vs ``reference`` and the noise estimate (if the trace kept
    ``"noise"``); one PNG per frame plots every method's error-vs-step curve with the frame's
    step marked. A ``Play`` button and an ``IntSlider`` pick the frame, a ``ToggleButtons``
    picks one method or "all methods" (to compare naive and compensated traces at once). All
    controls are connected with ``jslink`` to ``Stack.selected_index``, so the view also works
    from saved widget state (static HTML, nbviewer, a notebook opened without running it).

    Notebook size is bounded two ways: traces longer than ``max_frames`` steps are subsampled
    (first and last kept), and latents are average-pooled to at most ``max_latent_px`` pixels a
    side (a 4x64x64 SD latent shows its first 3 channels as RGB at 32x32, or their mean with
    ``channels="mean"``). The 8x8 digits cost about ``frames x (methods x 1.5 kB + 5 kB)`` of
    PNG; a warning says when all frames exceed 1 MB. ``panel_px`` is the on-screen panel size
    (nearest-neighbour upsampling). Returns a :class:`StepExplorer`; display it.
    """
    import ipywidgets as W
    from ipywidgets.widgets.widget_string import HTMLStyle

    max_frames = check_int("max_frames", max_frames, minimum=1)
    trs = _as_traces(traces)
    image = _check_view_args(trs, key=key, image=image, channels=channels, log_error=log_error, dpi=dpi,
                             decode=decode)
    panel_px = check_int("panel_px", panel_px, minimum=1, maximum=4096)
    max_latent_px = check_int("max_latent_px", max_latent_px, minimum=1)
    interval_ms = check_int("interval_ms", interval_ms, minimum=1)
    names = _method_names(trs)
    refs = _resolve_refs(trs, reference, key)
    curves, ylabel = _curves(trs, refs, key)
    n_steps = max(len(tr) for tr in trs)
    frame_steps = _pick(n_steps, max_frames)
    subsampled = len(frame_steps) < n_steps

    # Colour limits fixed across frames and methods, so brightness means the same everywhere.
    def shrink(x: np.ndarray | None) -> np.ndarray | None:
        """PNG bytes grow with pixels: a 64x64 SD latent at 50 frames x 3 methods would
        otherwise exceed a notebook's budget."""
        return shrink_array(x, max_latent_px)

    lat = [shrink(tr.tensor(key)[:, image]) for tr in trs]
    vmax_lat = max(_robust_max(z) for z in lat)
    diffs = [None if r is None else shrink(tr.tensor(key)[:, image] - r[:, image]) for tr, r in zip(trs, refs)]
    vmax_err = max((_robust_max(d) for d in diffs if d is not None), default=1.0) or 1.0
    noise = [tr.tensors.get("noise") for tr in trs]
    noise = [None if n is None else shrink(np.asarray(n, dtype=np.float32)[:, image]) for n in noise]
    vmax_noise = max((_robust_max(n) for n in noise if n is not None), default=1.0)
    decoded = [None if decode is None else shrink(np.asarray(decode(tr.tensor(key)))[:, image]) for tr in trs]

    panel_names = [key] + (["decoded"] if decode is not None else [])
    panel_names += ["error vs reference"] if any(d is not None for d in diffs) else []
    panel_names += ["noise estimate"] if any(n is not None for n in noise) else []
    h, w = lat[0].shape[-2:]
    zoom = max(1, panel_px // max(h, w))
    gap = 4

    def composite(m: int, s: int) -> bytes:
        from PIL import Image

        tiles = []
        if s < len(trs[m]):
            tiles.append(_to_rgb8(_display(lat[m][s], channels), -vmax_lat, vmax_lat, "gray"))
            if decode is not None:
                tiles.append(_to_rgb8(_display(decoded[m][s], channels), -1.0, 1.0, "gray"))
            if "error vs reference" in panel_names:
                d = diffs[m]
                err = np.full((h, w), np.nan) if d is None else d[s].mean(axis=0)
                tiles.append(_to_rgb8(err, -vmax_err, vmax_err, "RdBu_r"))
            if "noise estimate" in panel_names:
                n = noise[m]
                tiles.append(_to_rgb8(np.full((h, w), np.nan) if n is None else _display(n[s], channels),
                                      -vmax_noise, vmax_noise, "gray"))
        else:  # this method has fewer steps: blank frame
            tiles = [np.full((h, w, 3), 255, np.uint8)] * len(panel_names)
        # Nearest-neighbour upsampling keeps latent pixels crisp; every tile gets the same size.
        size = (w * zoom, h * zoom)
        tiles = [np.asarray(Image.fromarray(t).resize(size, Image.NEAREST)) for t in tiles]
        sep = np.full((h * zoom, gap, 3), 255, np.uint8)
        row = [tiles[0]]
        for t in tiles[1:]:
            row += [sep, t]
        return _png(np.concatenate(row, axis=1))

    # Shared Layout/Style models: every widget otherwise brings its own (~1 kB each in the
    # saved widget state), which would outweigh the frames themselves.
    img_layout = W.Layout(margin="0px")
    text_layout, text_style, box_layout = W.Layout(), HTMLStyle(), W.Layout()

    def text(value: str) -> Any:
        return W.HTML(value, layout=text_layout, style=text_style)

    panel_width = w * zoom * len(panel_names) + gap * (len(panel_names) - 1)
    # Fixed sizes everywhere the content changes with the frame, so nothing moves while scrubbing;
    # one line per header cell (short names on narrow panels, the full name as a tooltip).
    tile = w * zoom
    short = {"error vs reference": "error vs ref.", "noise estimate": "noise est."}
    header_html = "".join(
        f'<div title="{html.escape(p)}" style="flex:0 0 {tile}px;width:{tile}px;margin-right:{gap}px;'
        f'font-size:12px;line-height:16px;text-align:center;white-space:nowrap;overflow:hidden;'
        f'text-overflow:ellipsis">{html.escape(p if len(p) * 7 <= tile else short.get(p, p))}</div>'
        for p in panel_names)
    header = text(f'<div style="display:flex;width:{panel_width + gap}px">{header_html}</div>')

    def method_stack(m: int) -> Any:
        images = [_image(W, composite(m, s), img_layout) for s in frame_steps]
        return W.Stack(images, selected_index=0, layout=box_layout)

    method_stacks = [method_stack(m) for m in range(len(trs))]
    labelled = [W.VBox([text(f"<b style='color:{matplotlib.colors.to_hex(f'C{m}')}'>{html.escape(n)}</b>"),
                        header, st], layout=box_layout) for m, (n, st) in enumerate(zip(names, method_stacks))]
    views = labelled + ([W.VBox(labelled, layout=box_layout)] if len(trs) > 1 else [])
    view_stack = W.Stack(views, selected_index=0, layout=box_layout)

    has_curve = any(c is not None for c in curves)
    curve_stack = None
    if has_curve:
        curve_png = _curve_frames(trs, names, curves, frame_steps, ylabel, log_error, dpi)
        curve_stack = W.Stack([_image(W, p, img_layout) for p in curve_png],
                              selected_index=0, layout=box_layout)

    def caption(s: int) -> str:
        tr0 = next((tr for tr in trs if s < len(tr)), trs[0])
        parts = [f"step {s} (of {n_steps})", f"t {tr0.t_from[s]:.0f} → {tr0.t_to[s]:.0f}"]
        stats = []
        for m, (tr, name) in enumerate(zip(trs, names)):
            bits = []
            if curves[m] is not None and s < len(tr) and np.isfinite(curves[m][s]):
                bits.append(f"{'RMSE' if refs[m] is not None else 'residual'} {curves[m][s]:.3g}")
            if s < len(tr) and np.isfinite(tr.nfe[s]):
                bits.append(f"NFE {tr.nfe[s]:.0f}")
            iters = tr.scalars.get("iterations")
            if iters and s < len(iters) and iters[s] is not None:
                bits.append(f"iterations {np.mean(iters[s]):.3g}")
            if bits:
                stats.append(f"{html.escape(name)}: {', '.join(bits)}")
        return (f"<div style='font-size:12px;line-height:17px;white-space:nowrap;overflow:hidden;"
                f"text-overflow:ellipsis'><b>{' · '.join(parts)}</b><br>{'<br>'.join(stats)}</div>")

    # The left column has a fixed width and the captions a fixed height, so the curve panel to
    # the right stays put while the slider moves (caption lengths differ from frame to frame).
    left_width = max(panel_width + gap, 360)
    captions = W.Stack([text(caption(s)) for s in frame_steps], selected_index=0,
                       layout=W.Layout(width=f"{left_width}px", height=f"{17 * (1 + len(trs)) + 6}px",
                                       overflow="hidden"))

    # A track of at least 12 px per frame (within 300-600 px), so every step can be hit with the
    # mouse; the arrow keys step one frame once the slider has focus.
    track = int(np.clip(12 * (len(frame_steps) - 1), 300, 600))
    slider = W.IntSlider(value=0, min=0, max=len(frame_steps) - 1, step=1,
                         description="frame" if subsampled else "step", continuous_update=True,
                         readout=not subsampled, style=W.SliderStyle(description_width="44px"),
                         layout=W.Layout(width=f"{track + 44 + 56}px"))
    play = W.Play(value=0, min=0, max=len(frame_steps) - 1, step=1, interval=interval_ms, description="play")
    options = names + (["all methods"] if len(trs) > 1 else [])
    selector = W.ToggleButtons(options=options, index=0, description="method")

    links = [W.jslink((play, "value"), (slider, "value")),
             W.jslink((selector, "index"), (view_stack, "selected_index")),
             W.jslink((slider, "value"), (captions, "selected_index"))]
    links += [W.jslink((slider, "value"), (st, "selected_index")) for st in method_stacks]
    if curve_stack is not None:
        links.append(W.jslink((slider, "value"), (curve_stack, "selected_index")))

    def shade(x: np.ndarray) -> str:
        """How a tile shows its values: grey for one channel (or the mean), RGB for three or more."""
        return "grey" if _display(x[0], channels).ndim == 2 else "channels 1-3 as RGB"

    scale = [f"{key}: {shade(lat[0])} ±{vmax_lat:.2g}"]
    if "error vs reference" in panel_names:
        scale.append(f"error: blue −{vmax_err:.2g} … red +{vmax_err:.2g} (latent units)")
    if "noise estimate" in panel_names:
        shown_noise = next(n for n in noise if n is not None)
        scale.append(f"noise: {shade(shown_noise)} ±{vmax_noise:.2g}")
    # Saved-state views that no kernel owns get ipywidgets' red "disconnected" chain icon on every
    # widget in JupyterLab (a kernel is running but the cell has not been run). This view runs
    # entirely in the browser (jslink), so the icons only mislead; this <style>, scoped to the
    # explorer's CSS class, hides them. Running the cell replaces the view with a live one.
    hide_disconnected = (f"<style>.{_EXPLORER_CLASS} .jupyter-widgets-disconnected::before,"
                         f".{_EXPLORER_CLASS}.jupyter-widgets-disconnected::before"
                         "{display:none!important;content:none!important}</style>")
    legend = text(hide_disconnected + f"<span style='font-size:12px;color:#555'>colour scales fixed over all "
                  f"frames: {html.escape('; '.join(scale))}" + (f"; showing {len(frame_steps)} of {n_steps} steps"
                                                               if subsampled else "") + "</span>")
    right = [curve_stack] if curve_stack is not None else []
    left = W.VBox([captions, view_stack], layout=W.Layout(width=f"{left_width}px", flex="0 0 auto"))
    body = W.HBox([left, *right], layout=W.Layout(align_items="flex-start"))
    widget = W.VBox([W.HBox([play, slider]), selector, body, legend])
    widget.add_class(_EXPLORER_CLASS)
    stacks = method_stacks + [view_stack, captions] + right
    total = sum(len(im.value) for st in method_stacks + right for im in st.children)
    if total > 2**20:
        warnings.warn(f"step_explorer frames take {total / 2**20:.1f} MB of PNG, saved into the notebook; "
                      "lower max_frames or max_latent_px", stacklevel=2)
    return StepExplorer(widget, slider, play, selector, stacks, links, frame_steps, names)


class EditExplorer:
    """Handles to the parts of an :func:`edit_explorer` view; displaying it shows ``widget``."""

    def __init__(self, widget: Any, source: Any, target: Any, stacks: list[Any], links: list[Any],
                 methods: list[str], taus: list[float]) -> None:
        self.widget, self.source, self.target, self.stacks, self.links = widget, source, target, stacks, links
        self.methods, self.taus = methods, taus

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        return f"EditExplorer(methods={self.methods!r}, taus={self.taus!r})"


def _edit_panel(source: np.ndarray, rows: Sequence[Sequence[np.ndarray | None]], ok: Sequence[Sequence[bool | None]],
                row_names: Sequence[str], col_names: Sequence[str], zoom: int) -> bytes:
    """One PNG: the source digit, then a grid (rows: methods, columns: tau) of edits; a green
    frame where the classifier reads the target digit, red where it does not."""
    from PIL import Image, ImageDraw

    h, w = source.shape[-2:]
    tile, gap, label_w, head_h = w * zoom, 6, 8 * max(len(n) for n in row_names) + 6, 16
    n_rows, n_cols = len(rows), len(col_names)
    width = label_w + (tile + gap) * (n_cols + 1) + gap
    height = head_h + (tile + gap) * n_rows + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)

    def put(img: np.ndarray, x: int, y: int, frame: str | None) -> None:
        rgb = _to_rgb8(img, -1.0, 1.0, "gray")
        canvas.paste(Image.fromarray(rgb).resize((tile, tile), Image.NEAREST), (x, y))
        if frame is not None:
            draw.rectangle([x - 2, y - 2, x + tile + 1, y + tile + 1], outline=frame, width=2)

    draw.text((label_w, 2), "source", fill="black")
    put(source, label_w, head_h + gap, None)
    for c, name in enumerate(col_names):
        draw.text((label_w + (tile + gap) * (c + 1), 2), name, fill="black")
    for r, (name, row) in enumerate(zip(row_names, rows)):
        y = head_h + gap + (tile + gap) * r
        draw.text((2, y + tile // 2 - 5), name, fill="black")
        for c, img in enumerate(row):
            if img is not None:
                good = ok[r][c]
                put(img, label_w + (tile + gap) * (c + 1), y,
                    None if good is None else ("#1a9850" if good else "#d73027"))
    return _png(np.asarray(canvas))


def edit_explorer(
    sources: np.ndarray,
    source_labels: Sequence[int],
    target_labels: Sequence[int],
    edits: dict[str, dict[float, np.ndarray]],
    success: dict[str, dict[float, np.ndarray]] | None = None,
    reconstructions: dict[str, np.ndarray] | None = None,
    *,
    zoom: int = 5,
) -> EditExplorer:
    """A kernel-free explorer of edits: source digit x target digit, every method x tau at once.

    ``sources`` ``(N, 1, H, W)`` in ``[-1, 1]``; image ``k`` was edited from digit
    ``source_labels[k]`` into ``target_labels[k]``; ``edits[method][tau]`` are the edited images
    ``(N, 1, H, W)``, ``success[method][tau]`` per-image booleans (the frame colour).
    For a (source, target) pair the first image with that pair is shown; a target equal to the
    source shows ``reconstructions[method]`` (the unchanged prompt), a pair without an image a
    note. Two ``ToggleButtons`` are ``jslink``-ed to ``Stack.selected_index`` (one outer stack
    of source digits, one inner stack per source), so the view works from saved widget state,
    as :func:`step_explorer` does.
    """
    import ipywidgets as W
    from ipywidgets.widgets.widget_string import HTMLStyle

    zoom = check_int("zoom", zoom, minimum=1, maximum=64)
    sources = np.asarray(sources, dtype=np.float32)
    src, tgt = np.asarray(source_labels), np.asarray(target_labels)
    if sources.ndim != 4 or src.ndim != 1 or tgt.ndim != 1 or len(src) != len(sources) or len(tgt) != len(sources):
        raise ValueError(f"sources (N, 1, H, W) with N labels each, got {sources.shape}, {src.shape}, {tgt.shape}")
    for name, labels in (("source_labels", src), ("target_labels", tgt)):
        for v in labels.tolist():
            if not (isinstance(v, (int, float)) and float(v).is_integer() and v >= 0):  # digits: whole numbers
                raise ValueError(f"{name} must be whole numbers >= 0, got {v!r}")
    if not isinstance(edits, dict):
        raise ValueError(f"edits must be a dict {{method: {{tau: images}}}}, got {type(edits).__name__}")
    methods = list(edits)
    if not methods:
        raise ValueError("edits is empty")
    for m in methods:
        if not isinstance(edits[m], dict):
            raise ValueError(f"edits[{m!r}] must be a dict {{tau: images}}, got {type(edits[m]).__name__}")
        for tau, images in edits[m].items():
            if np.shape(images) != sources.shape:
                raise ValueError(f"edits[{m!r}][{tau!r}] must have the shape of sources {sources.shape}, "
                                 f"got {np.shape(images)}")
            if success is not None and tau in success.get(m, {}) and np.shape(success[m][tau]) != (len(sources),):
                raise ValueError(f"success[{m!r}][{tau!r}] must hold one flag per image ({len(sources)},), "
                                 f"got {np.shape(success[m][tau])}")
        if reconstructions is not None and np.shape(reconstructions.get(m)) != sources.shape:
            raise ValueError(f"reconstructions[{m!r}] must be given with the shape of sources {sources.shape} "
                             f"for every method of edits, got {np.shape(reconstructions.get(m))}")
    taus = sorted({float(t) for m in methods for t in edits[m]})
    digits = sorted(set(src.tolist()) | set(tgt.tolist()))
    col_names = [f"tau {t:g}" for t in taus]
    layout, text_style = W.Layout(margin="0px"), HTMLStyle()

    def panel(d: int, t: int) -> Any:
        if t == d and reconstructions is not None and (src == d).any():
            k = int(np.flatnonzero(src == d)[0])
            rows = [[np.asarray(reconstructions[m])[k, 0]] + [None] * (len(taus) - 1) for m in methods]
            png = _edit_panel(sources[k, 0], rows, [[None] * len(taus)] * len(methods), methods,
                              ["reconstruction"] + [""] * (len(taus) - 1), zoom)
            return _image(W, png, layout)
        hits = np.flatnonzero((src == d) & (tgt == t))
        if hits.size == 0:
            return W.HTML(f"<i>no image edited from {d} into {t}</i>", layout=layout, style=text_style)
        k = int(hits[0])
        rows = [[np.asarray(edits[m][tau])[k, 0] if tau in edits[m] else None for tau in taus] for m in methods]
        ok = [[None if success is None or tau not in success.get(m, {}) else bool(success[m][tau][k])
               for tau in taus] for m in methods]
        return _image(W, _edit_panel(sources[k, 0], rows, ok, methods, col_names, zoom), layout)

    inner = [W.Stack([panel(d, t) for t in digits], selected_index=0, layout=layout) for d in digits]
    outer = W.Stack(inner, selected_index=0, layout=layout)
    names = [str(d) for d in digits]
    source = W.ToggleButtons(options=names, index=0, description="source",
                             style=W.ToggleButtonsStyle(button_width="32px"))
    target = W.ToggleButtons(options=names, index=min(1, len(names) - 1), description="target",
                             style=W.ToggleButtonsStyle(button_width="32px"))
    for st in inner:
        st.selected_index = target.index
    links = [W.jslink((source, "index"), (outer, "selected_index"))]
    links += [W.jslink((target, "index"), (st, "selected_index")) for st in inner]
    legend = W.HTML("<style>.cfginv-edit-explorer .jupyter-widgets-disconnected::before{display:none!important;"
                    "content:none!important}</style><span style='font-size:12px;color:#555'>frame: green = the "
                    "classifier reads the target digit, red = it does not; target = source shows the "
                    "reconstructions (unchanged prompt)</span>", style=text_style)
    widget = W.VBox([source, target, outer, legend])
    widget.add_class("cfginv-edit-explorer")
    total = sum(len(im.value) for st in inner for im in st.children if isinstance(im, W.Image))
    if total > 2**20:
        warnings.warn(f"edit_explorer panels take {total / 2**20:.1f} MB of PNG; lower zoom", stacklevel=2)
    return EditExplorer(widget, source, target, inner + [outer], links, methods, taus)


def enable_colab_widgets() -> bool:
    """Let Colab render ipywidgets 8 and tqdm progress bars: call once in a notebook's setup cell.

    Colab's built-in widget manager predates ipywidgets 8 and does not run ``jslink``; its
    "custom widget manager" (loaded from a CDN) does. Outside Colab this does nothing. Returns
    True if it was enabled.
    """
    try:
        from google.colab import output  # type: ignore[import-not-found]
    except ImportError:
        return False
    output.enable_custom_widget_manager()
    return True


__all__ = ["EditExplorer", "Reference", "StepExplorer", "edit_explorer", "align_reference", "enable_colab_widgets", "error_curve",
           "solver_residual", "step_explorer", "step_montage"]
