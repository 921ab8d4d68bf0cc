"""The step explorer: pre-rendered PNG frames in ``Stack`` containers, switched by ``jslink``-ed controls.

Nothing runs in the kernel when the slider moves, so the view keeps working from a notebook saved
with its widget state (see :mod:`cfginv_lite.widgets`). It draws traces and precomputed error
curves (:func:`cfginv_lite.metrics.error_curves`); it measures nothing itself.
"""
from __future__ import annotations

import html
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import numpy as np

from ..metrics import ErrorCurves, Reference
from ..pooling import shrink_array
from ..trace import Trace
from ..validation import check_int
from .common import DPI, as_traces, check_view_args, curves_to_draw, method_names, pick
from .curve_frames import curve_frames
from .png import ChannelMode, display, image_widget, png, robust_max, to_rgb8

_EXPLORER_CLASS = "cfginv-step-explorer"
_GAP = 4  # pixels between the tiles of a frame


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


class _Tiles:
    """The tiles of one frame per method (latent, decoded, error map, noise), with colour limits
    fixed across frames and methods, so brightness means the same everywhere."""

    def __init__(self, trs: Sequence[Trace], refs: Sequence[np.ndarray | None], *, key: str, image: int,
                 decode: Callable[[np.ndarray], np.ndarray] | None, channels: ChannelMode, max_latent_px: int,
                 panel_px: int) -> None:
        def shrink(x: np.ndarray | None) -> np.ndarray | None:
            """PNG bytes grow with pixels: a 64x64 SD latent at 50 frames x 3 methods would
            otherwise exceed a notebook's budget."""
            return shrink_array(x, max_latent_px)

        self.trs, self.key, self.channels, self.decode = trs, key, channels, decode
        self.lat = [shrink(tr.tensor(key)[:, image]) for tr in trs]
        self.vmax_lat = max(robust_max(z) for z in self.lat)
        self.diffs = [None if r is None else shrink(tr.tensor(key)[:, image] - r[:, image]) for tr, r in zip(trs, refs)]
        self.vmax_err = max((robust_max(d) for d in self.diffs if d is not None), default=1.0) or 1.0
        noise = [tr.tensors.get("noise") for tr in trs]
        self.noise = [None if n is None else shrink(np.asarray(n, dtype=np.float32)[:, image]) for n in noise]
        self.vmax_noise = max((robust_max(n) for n in self.noise if n is not None), default=1.0)
        self.decoded = [None if decode is None else shrink(np.asarray(decode(tr.tensor(key)))[:, image]) for tr in trs]
        self.names = [key] + (["decoded"] if decode is not None else [])
        self.names += ["error vs reference"] if any(d is not None for d in self.diffs) else []
        self.names += ["noise estimate"] if any(n is not None for n in self.noise) else []
        self.h, self.w = self.lat[0].shape[-2:]
        self.zoom = max(1, panel_px // max(self.h, self.w))
        self.tile = self.w * self.zoom
        self.width = self.tile * len(self.names) + _GAP * (len(self.names) - 1)

    def composite(self, m: int, s: int) -> bytes:
        """Method ``m`` at step ``s``: its tiles side by side, as one PNG."""
        from PIL import Image

        h, w, tiles = self.h, self.w, []
        if s < len(self.trs[m]):
            tiles.append(to_rgb8(display(self.lat[m][s], self.channels), -self.vmax_lat, self.vmax_lat, "gray"))
            if self.decode is not None:
                tiles.append(to_rgb8(display(self.decoded[m][s], self.channels), -1.0, 1.0, "gray"))
            if "error vs reference" in self.names:
                d = self.diffs[m]
                err = np.full((h, w), np.nan) if d is None else d[s].mean(axis=0)
                tiles.append(to_rgb8(err, -self.vmax_err, self.vmax_err, "RdBu_r"))
            if "noise estimate" in self.names:
                n = self.noise[m]
                tiles.append(to_rgb8(np.full((h, w), np.nan) if n is None else display(n[s], self.channels),
                                     -self.vmax_noise, self.vmax_noise, "gray"))
        else:  # this method has fewer steps: blank frame
            tiles = [np.full((h, w, 3), 255, np.uint8)] * len(self.names)
        # Nearest-neighbour upsampling keeps latent pixels crisp; every tile gets the same size.
        size = (w * self.zoom, h * self.zoom)
        tiles = [np.asarray(Image.fromarray(t).resize(size, Image.NEAREST)) for t in tiles]
        sep = np.full((h * self.zoom, _GAP, 3), 255, np.uint8)
        row = [tiles[0]]
        for t in tiles[1:]:
            row += [sep, t]
        return png(np.concatenate(row, axis=1))

    def header(self) -> str:
        """One line per header cell (short names on narrow panels, the full name as a tooltip)."""
        short = {"error vs reference": "error vs ref.", "noise estimate": "noise est."}
        cells = "".join(
            f'<div title="{html.escape(p)}" style="flex:0 0 {self.tile}px;width:{self.tile}px;margin-right:{_GAP}px;'
            f'font-size:12px;line-height:16px;text-align:center;white-space:nowrap;overflow:hidden;'
            f'text-overflow:ellipsis">{html.escape(p if len(p) * 7 <= self.tile else short.get(p, p))}</div>'
            for p in self.names)
        return f'<div style="display:flex;width:{self.width + _GAP}px">{cells}</div>'

    def scales(self) -> list[str]:
        """How each kind of tile maps values to colours."""
        def shade(x: np.ndarray) -> str:
            """Grey for one channel (or the mean), RGB for three or more."""
            return "grey" if display(x[0], self.channels).ndim == 2 else "channels 1-3 as RGB"

        scale = [f"{self.key}: {shade(self.lat[0])} ±{self.vmax_lat:.2g}"]
        if "error vs reference" in self.names:
            scale.append(f"error: blue −{self.vmax_err:.2g} … red +{self.vmax_err:.2g} (latent units)")
        if "noise estimate" in self.names:
            shown_noise = next(n for n in self.noise if n is not None)
            scale.append(f"noise: {shade(shown_noise)} ±{self.vmax_noise:.2g}")
        return scale


def _caption(trs: Sequence[Trace], names: Sequence[str], errors: ErrorCurves, s: int, n_steps: int) -> str:
    """The HTML caption of step ``s``: its levels, then per method its error, NFE and iterations."""
    tr0 = next((tr for tr in trs if s < len(tr)), trs[0])
    parts = [f"step {s} (of {n_steps})", f"t {tr0.t_from[s]:.0f} → {tr0.t_to[s]:.0f}"]
    stats = []
    for m, (tr, name) in enumerate(zip(trs, names)):
        bits = []
        c = errors.curves[m]
        if c is not None and s < len(tr) and np.isfinite(c[s]):
            bits.append(f"{'RMSE' if errors.references[m] is not None else 'residual'} {c[s]:.3g}")
        if s < len(tr) and np.isfinite(tr.nfe[s]):
            bits.append(f"NFE {tr.nfe[s]:.0f}")
        iters = tr.scalars.get("iterations")
        if iters and s < len(iters) and iters[s] is not None:
            bits.append(f"iterations {np.mean(iters[s]):.3g}")
        if bits:
            stats.append(f"{html.escape(name)}: {', '.join(bits)}")
    return (f"<div style='font-size:12px;line-height:17px;white-space:nowrap;overflow:hidden;"
            f"text-overflow:ellipsis'><b>{' · '.join(parts)}</b><br>{'<br>'.join(stats)}</div>")


def step_explorer(
    traces: Trace | Sequence[Trace],
    reference: Reference | list[Reference | None] | None = None,
    *,
    curves: ErrorCurves | None = None,
    key: str = "latent",
    image: int = 0,
    max_frames: int = 50,
    decode: Callable[[np.ndarray], np.ndarray] | None = None,
    channels: ChannelMode = "auto",
    panel_px: int = 112,
    max_latent_px: int = 32,
    log_error: bool = False,
    interval_ms: int = 600,
    dpi: int = DPI,
) -> StepExplorer:
    """Interactive step explorer that needs no kernel: pre-rendered frames switched in the browser.

    Per method and frame one PNG shows, side by side, the ``key`` latent (and ``decode`` of it,
    if given), the error map vs the reference and the noise estimate (if the trace kept
    ``"noise"``); one PNG per frame plots every method's error-vs-step curve with the frame's
    step marked. The curves are ``curves`` (:func:`cfginv_lite.metrics.error_curves` of the
    traces) or, for convenience, that function's result for ``reference`` (give one or the
    other). A ``Play`` button and an ``IntSlider`` pick the frame, a ``ToggleButtons``
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
    trs = as_traces(traces)
    image = check_view_args(trs, key=key, image=image, channels=channels, log_error=log_error, dpi=dpi,
                            decode=decode)
    panel_px = check_int("panel_px", panel_px, minimum=1, maximum=4096)
    max_latent_px = check_int("max_latent_px", max_latent_px, minimum=1)
    interval_ms = check_int("interval_ms", interval_ms, minimum=1)
    names = method_names(trs)
    errors = curves_to_draw(trs, reference, curves, key)
    n_steps = max(len(tr) for tr in trs)
    frame_steps = pick(n_steps, max_frames)
    subsampled = len(frame_steps) < n_steps
    tiles = _Tiles(trs, errors.references, key=key, image=image, decode=decode, channels=channels,
                   max_latent_px=max_latent_px, panel_px=panel_px)

    # Shared Layout/Style models: every widget otherwise brings its own (~1 kB each in the
    # saved widget state), which would outweigh the frames themselves.
    img_layout = W.Layout(margin="0px")
    text_layout, text_style, box_layout = W.Layout(), HTMLStyle(), W.Layout()

    def text(value: str) -> Any:
        return W.HTML(value, layout=text_layout, style=text_style)

    # Fixed sizes everywhere the content changes with the frame, so nothing moves while scrubbing.
    header = text(tiles.header())
    method_stacks = [W.Stack([image_widget(W, tiles.composite(m, s), img_layout) for s in frame_steps],
                             selected_index=0, layout=box_layout) for m in range(len(trs))]
    labelled = [W.VBox([text(f"<b style='color:{matplotlib.colors.to_hex(f'C{m}')}'>{html.escape(n)}</b>"),
                        header, st], layout=box_layout) for m, (n, st) in enumerate(zip(names, method_stacks))]
    views = labelled + ([W.VBox(labelled, layout=box_layout)] if len(trs) > 1 else [])
    view_stack = W.Stack(views, selected_index=0, layout=box_layout)

    curve_stack = None
    if errors.has_curve:
        curve_png = curve_frames(trs, names, errors, frame_steps, log_error, dpi)
        curve_stack = W.Stack([image_widget(W, p, img_layout) for p in curve_png],
                              selected_index=0, layout=box_layout)

    # The left column has a fixed width and the captions a fixed height, so the curve panel to
    # the right stays put while the slider moves (caption lengths differ from frame to frame).
    left_width = max(tiles.width + _GAP, 360)
    captions = W.Stack([text(_caption(trs, names, errors, s, n_steps)) for s in frame_steps], selected_index=0,
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

    # Saved-state views that no kernel owns get ipywidgets' red "disconnected" chain icon on every
    # widget in JupyterLab (a kernel is running but the cell has not been run). This view runs
    # entirely in the browser (jslink), so the icons only mislead; this <style>, scoped to the
    # explorer's CSS class, hides them. Running the cell replaces the view with a live one.
    hide_disconnected = (f"<style>.{_EXPLORER_CLASS} .jupyter-widgets-disconnected::before,"
                         f".{_EXPLORER_CLASS}.jupyter-widgets-disconnected::before"
                         "{display:none!important;content:none!important}</style>")
    legend = text(hide_disconnected + f"<span style='font-size:12px;color:#555'>colour scales fixed over all "
                  f"frames: {html.escape('; '.join(tiles.scales()))}"
                  + (f"; showing {len(frame_steps)} of {n_steps} steps" if subsampled else "") + "</span>")
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


__all__ = ["StepExplorer", "step_explorer"]
