"""The edit explorer: source digit x target digit, every method x tau at once, switched in the browser."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..validation import check_int
from .png import image_widget, png, to_rgb8


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
        rgb = to_rgb8(img, -1.0, 1.0, "gray")
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
    return png(np.asarray(canvas))


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
            data = _edit_panel(sources[k, 0], rows, [[None] * len(taus)] * len(methods), methods,
                               ["reconstruction"] + [""] * (len(taus) - 1), zoom)
            return image_widget(W, data, layout)
        hits = np.flatnonzero((src == d) & (tgt == t))
        if hits.size == 0:
            return W.HTML(f"<i>no image edited from {d} into {t}</i>", layout=layout, style=text_style)
        k = int(hits[0])
        rows = [[np.asarray(edits[m][tau])[k, 0] if tau in edits[m] else None for tau in taus] for m in methods]
        ok = [[None if success is None or tau not in success.get(m, {}) else bool(success[m][tau][k])
               for tau in taus] for m in methods]
        return image_widget(W, _edit_panel(sources[k, 0], rows, ok, methods, col_names, zoom), layout)

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


__all__ = ["EditExplorer", "edit_explorer"]
