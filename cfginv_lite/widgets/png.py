"""Pixels for the views: latent tiles as RGB arrays, PNG bytes, and ``ipywidgets.Image`` of them."""
from __future__ import annotations

import io
from typing import Any, Literal

import matplotlib
import numpy as np

ChannelMode = Literal["auto", "mean", "rgb"]
CHANNEL_MODES: tuple[str, ...] = ("auto", "mean", "rgb")


def display(x: np.ndarray, channels: ChannelMode = "auto") -> np.ndarray:
    """``(C, h, w)`` -> ``(h, w)`` grey or ``(h, w, 3)`` RGB (first 3 channels, e.g. SD's 4)."""
    C = x.shape[0]
    if C == 1:
        return x[0]
    if channels == "mean" or (channels == "auto" and C == 2):
        return x.mean(axis=0)
    return np.moveaxis(x[:3], 0, -1)


def to_rgb8(img: np.ndarray, vmin: float, vmax: float, cmap: str) -> np.ndarray:
    """Scale to [0, 1] with fixed limits (comparable across frames) and colour-map greys."""
    span = vmax - vmin if vmax > vmin else 1.0
    v = np.clip((np.nan_to_num(img, nan=vmin) - vmin) / span, 0, 1)
    if v.ndim == 2:
        v = matplotlib.colormaps[cmap](v)[..., :3]
    return (v * 255 + 0.5).astype(np.uint8)


def png(rgb: np.ndarray, zoom: int = 1) -> bytes:
    """PNG bytes, upsampled with nearest neighbour (8x8 latents stay crisp), palette-compressed."""
    from PIL import Image

    im = Image.fromarray(rgb)
    if zoom > 1:
        im = im.resize((im.width * zoom, im.height * zoom), Image.NEAREST)
    im = im.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def image_widget(W: Any, data: bytes, layout: Any) -> Any:
    """An ``ipywidgets.Image`` at its natural pixel size: without explicit width/height, flex
    boxes stretch it to their height and distort or crop it."""
    w, h = png_size(data)
    return W.Image(value=data, format="png", width=str(w), height=str(h), layout=layout)


def robust_max(x: np.ndarray) -> float:
    """The 99.5th percentile of ``|x|`` over finite entries (1.0 if none): a colour limit outliers do not set."""
    finite = np.abs(x[np.isfinite(x)])
    return float(np.percentile(finite, 99.5)) if finite.size else 1.0


__all__ = ["CHANNEL_MODES", "ChannelMode", "display", "image_widget", "png", "png_size", "robust_max", "to_rgb8"]
