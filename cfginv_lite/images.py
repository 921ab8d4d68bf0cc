"""Loading images for inversion, and converting results back to PIL.

:func:`load_image` turns a file, PIL image, numpy array or torch tensor into the tensor the
models expect: ``(1, 3, S, S)`` float32 in ``[-1, 1]``. Its steps, in order:

1. EXIF orientation is applied (phone photos are stored sideways with a rotation tag).
2. Every mode becomes RGB (palette, greyscale, CMYK, 16-bit) or RGB + alpha (LA, RGBA, PA).
3. Alpha is composited onto white **in [0, 1]**: ``rgb * alpha + (1 - alpha)``. The original
   notebook scaled to ``[-1, 1]`` first and composited afterwards, which is wrong: in
   ``[-1, 1]`` a fully transparent pixel comes out as 0 (mid grey) instead of +1 (white), and
   partly transparent pixels are darkened. Compositing before resizing also keeps the colour
   of invisible pixels from bleeding into the visible ones.
4. The shorter side is resized to ``S`` with a Lanczos filter and the centre ``S x S`` square
   is kept (one ``resize`` with a crop box, in float32; Lanczos overshoot is clipped).
5. Pixels are scaled to ``[-1, 1]``: ``x * 2 - 1``.

``S`` must be a multiple of ``multiple``: 8 is the VAE's factor (the minimum), 64 (the
default) keeps every SD 1.x/2.x UNet level an integer size.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps

ImageSource = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def load_image(source: ImageSource, size: int = 512, multiple: int = 64) -> torch.Tensor:
    """Load ``source`` as a ``(1, 3, size, size)`` float32 tensor in ``[-1, 1]``.

    Parameters
    ----------
    source:
        A local file path (``str``/``Path``; URLs are refused: download first), a PIL image,
        a numpy array ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4``, or a torch tensor
        ``(C, H, W)`` / ``(1, C, H, W)`` with ``C`` in 1, 3, 4. The brightness scale comes
        from the dtype or PIL mode, never from the values: uint8 and 8-bit modes / 255,
        uint16 and modes ``"I;16"``/``"I"`` / 65535; floats (numpy, torch, mode ``"F"``) must
        already lie in ``[0, 1]`` (torchvision's convention, *not* the models' ``[-1, 1]``).
    size:
        Output side in pixels, a multiple of ``multiple``.
    multiple:
        8 at least (the VAE factor); 64 by default, safe for SD 1.x/2.x.

    Raises ``ValueError`` for a bad size, an empty or wrongly shaped array, values out of
    range, an image whose shorter side is below ``multiple`` pixels, a file that is not an
    image (or not a regular file, or too large to decode safely: PIL's decompression-bomb
    limit), or a URL; ``FileNotFoundError`` for a missing file.
    """
    _check_size(size, multiple)
    rgba = _to_float_array(source)                   # (H, W, 3|4) float32 in [0, 1]
    rgb = composite_on_white(rgba)
    h, w = rgb.shape[:2]
    if min(h, w) < multiple:
        raise ValueError(f"image is {w}x{h} pixels; the shorter side must be at least {multiple} pixels "
                         f"(the minimum for multiple={multiple})")
    square = _resize_center_crop(rgb, size)
    tensor = torch.from_numpy(np.ascontiguousarray(square.transpose(2, 0, 1)))[None]
    return tensor * 2.0 - 1.0


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """A ``(1, C, H, W)`` or ``(C, H, W)`` tensor in ``[-1, 1]`` (C = 3, or 1 for greyscale) -> PIL.

    Values are clamped to ``[-1, 1]`` and rounded to 8 bits. NaNs raise ``ValueError`` (a
    diverged inversion) rather than silently becoming black pixels; so do integer tensors
    (8-bit pixels would all clamp to white) and empty images.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    x = tensor.detach()
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"to_pil converts one image; got a batch of {x.shape[0]} (index it: tensor[i])")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected (C, H, W) or (1, C, H, W) with C in (1, 3), got {tuple(tensor.shape)}")
    if not x.is_floating_point():  # uint8 pixels would be clamped to [-1, 1]: an all-white picture
        raise ValueError(f"to_pil expects a float tensor in [-1, 1], got dtype {x.dtype} "
                         "(8-bit pixels? pass x.float() / 127.5 - 1, or use PIL.Image.fromarray)")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"image is empty, shape {tuple(tensor.shape)}")
    x = x.float().cpu()
    if torch.isnan(x).any():
        raise ValueError("image contains NaN values (a diverged run?)")
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    # uint8 (H, W) -> mode "L", (H, W, 3) -> "RGB" (fromarray infers it; its mode= is deprecated).
    return Image.fromarray(np.ascontiguousarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels))


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """``(H, W, 4)`` float in ``[0, 1]`` -> ``(H, W, 3)``: ``rgb * a + 1 * (1 - a)`` (white background).

    Must run on ``[0, 1]`` values (see the module docstring); ``(H, W, 3)`` passes through.
    """
    if rgba.shape[2] == 3:
        return rgba
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    return rgb * alpha + (1.0 - alpha)


# --------------------------------------------------------------------------- helpers
def _check_size(size: Any, multiple: Any) -> None:
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 8 or multiple % 8:
        raise ValueError(f"multiple must be a positive multiple of 8 (the VAE factor), got {multiple!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < multiple or size % multiple:
        raise ValueError(f"size must be a positive multiple of {multiple}, got {size!r}")


def _to_float_array(source: Any) -> np.ndarray:
    """Any supported source -> ``(H, W, 3|4)`` float32 in ``[0, 1]``."""
    if isinstance(source, (str, Path)):
        return _pil_to_array(_open(source))
    if isinstance(source, Image.Image):
        return _pil_to_array(source)
    if isinstance(source, torch.Tensor):
        return _array_to_float(_tensor_to_hwc(source), "tensor")
    if isinstance(source, np.ndarray):
        return _array_to_float(source, "array")
    raise ValueError(f"cannot load an image from {type(source).__name__}; "
                     "pass a path, a PIL image, a numpy array or a torch tensor")


def _open(source: str | Path) -> Image.Image:
    shown = str(source)  # the caller's spelling: Path() would turn "https://x" into "https:/x"
    if isinstance(source, str) and "://" in source:
        raise ValueError(f"{shown!r} looks like a URL; load_image reads local files. Download it first, "
                         "e.g. urllib.request.urlretrieve(url, 'image.png'), then load 'image.png'")
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # "~user" for an unknown user: take the name literally
        path = Path(source)
    try:
        mode = os.stat(path).st_mode  # stat, never open: opening a FIFO would block forever
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"no image file at {shown!r}") from None
    except (OSError, ValueError) as err:  # permission, name too long, embedded NUL, ...
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ValueError(f"cannot read the image file {shown!r}: {reason}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{shown!r} is a folder, not an image file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{shown!r} is not a regular file (a FIFO, socket or device); pass an image file")
    try:
        with Image.open(path) as img:
            img.load()  # read now: the file closes on leaving the block
            return img
    except Image.DecompressionBombError as err:
        raise ValueError(f"{shown!r} is too large to load safely ({err}); it may be a decompression bomb. "
                         "If you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS first") from None
    except PermissionError as err:
        raise ValueError(f"cannot read the image file {shown!r}: {err.strerror}") from None
    except Exception as err:  # noqa: BLE001  PIL plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        raise ValueError(f"{shown!r} is not a readable image ({type(err).__name__}: {err})") from None


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """EXIF-orient, then convert any PIL mode to ``(H, W, 3|4)`` float32 in ``[0, 1]``.

    The scale comes from the mode, never from the pixel values: 8-bit modes are divided by
    255; ``"I;16*"`` and ``"I"`` (how PIL stores 16-bit PNG/TIFF data) by 65535, and "I"
    values outside 0..65535 are an error; ``"F"`` is a float image and, like float arrays,
    must already lie in ``[0, 1]``.
    """
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as err:  # noqa: BLE001  a corrupt EXIF block
        raise ValueError(f"cannot apply the image's EXIF orientation ({type(err).__name__}: {err})") from None
    if img.width == 0 or img.height == 0:
        raise ValueError(f"image is empty ({img.width}x{img.height})")
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        grey = np.asarray(img).astype(np.float64)
        lo, hi = float(grey.min()), float(grey.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"mode {img.mode!r} image has values in [{lo:.6g}, {hi:.6g}]; integer images are read "
                             "as 16-bit (0..65535). Convert it to float in [0, 1] first")
        return np.repeat((grey / 65535.0).astype(np.float32)[..., None], 3, axis=2)
    if img.mode == "F":
        return _array_to_float(np.asarray(img, dtype=np.float32), "(PIL mode 'F')")
    bands = img.getbands()
    has_alpha = (bands[-1] in ("A", "a") and img.mode != "LAB") or (
        img.mode == "P" and "transparency" in img.info)
    if img.mode == "La":  # premultiplied: PIL converts it only to "LA" (which un-premultiplies)
        img = img.convert("LA")
    try:
        img = img.convert("RGBA" if has_alpha else "RGB")  # palette, L, LA, CMYK, YCbCr, ...
    except ValueError as err:
        raise ValueError(f"cannot convert a mode {img.mode!r} image to RGB ({err})") from None
    return np.asarray(img, dtype=np.float32) / 255.0


def _tensor_to_hwc(tensor: torch.Tensor) -> np.ndarray:
    x = tensor.detach().cpu()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        return _tensor_numpy(x)
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError("image tensors must be (C, H, W) or (1, C, H, W) with C in (1, 3, 4), "
                         f"got {tuple(tensor.shape)}")
    return _tensor_numpy(x.permute(1, 2, 0))


def _tensor_numpy(x: torch.Tensor) -> np.ndarray:
    if x.is_floating_point():
        x = x.float()  # bfloat16/float16 -> float32: numpy has no bfloat16
    elif x.is_complex():
        raise ValueError(f"image tensors must be uint8, uint16 or float in [0, 1], got dtype {x.dtype}")
    try:
        return x.numpy()
    except TypeError:  # dtypes numpy cannot hold (uint32/uint64 on older torch)
        raise ValueError(f"image tensors must be uint8, uint16 or float in [0, 1], got dtype {x.dtype}") from None


def _float_range_hint(lo: float, hi: float) -> str:
    """Name the convention the values most likely follow, so the hint fits the data."""
    if lo >= -1.0 and hi <= 1.0:
        return " (a [-1, 1] model tensor? pass (x + 1) / 2)"
    if lo >= 0.0 and hi <= 255.0:
        return " (8-bit pixels in [0, 255]? pass x / 255, or a uint8 array)"
    if lo >= 0.0 and hi <= 65535.0:
        return " (16-bit pixels in [0, 65535]? pass x / 65535, or a uint16 array)"
    return ""


def _array_to_float(array: np.ndarray, what: str) -> np.ndarray:
    """``HxW`` / ``HxWx{1,3,4}`` uint8, uint16 or float ``[0, 1]`` -> ``(H, W, 3|4)`` float32.

    The scale comes from the dtype: uint8 / 255, uint16 / 65535, floats as they are (and
    they must lie in ``[0, 1]``: the same rule for numpy, torch and PIL mode "F").
    """
    if array.size == 0:
        raise ValueError(f"image {what} is empty, shape {array.shape}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"image {what}s must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype.type is np.uint8:
        out = array.astype(np.float32) / 255.0
    elif array.dtype.type is np.uint16:
        out = (array.astype(np.float64) / 65535.0).astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: reported below
            out = array.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError(f"image {what} contains NaN or infinite values")
        lo, hi = float(out.min()), float(out.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float image {what} values must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]"
                             + _float_range_hint(lo, hi))
    else:
        raise ValueError(f"image {what}s must be uint8, uint16 or float in [0, 1], got dtype {array.dtype}")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return out


def _resize_center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shorter side -> ``size`` (Lanczos), centre ``size x size`` crop, per channel in float32."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    left, top = (w - side) / 2.0, (h - side) / 2.0
    box = (left, top, left + side, top + side)  # the centre square, resized in one pass
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c]))  # float32 -> mode "F"
                   .resize((size, size), Image.Resampling.LANCZOS, box=box), dtype=np.float32)
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0)


__all__ = ["ImageSource", "composite_on_white", "load_image", "to_pil"]
