"""load_image / to_pil: orientation, modes, alpha compositing in [0, 1], resize + crop, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cfginv_lite.images import composite_on_white, load_image, to_pil

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _rgb(tensor: torch.Tensor, row: int, col: int) -> list[float]:
    return [round(v, 3) for v in tensor[0, :, row, col].tolist()]


# --------------------------------------------------------------------------- orientation
def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 128 wide x 64 high: top half red, bottom half blue, tagged "rotate 90 CW to view".
    stored = Image.new("RGB", (128, 64), RED)
    stored.paste(BLUE, (0, 32, 128, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    stored.save(path, exif=exif.tobytes())
    x = load_image(path, size=64)
    # Displayed: 64 wide x 128 high, left half blue, right half red; the centre crop keeps both.
    assert x.shape == (1, 3, 64, 64)
    assert _rgb(x, 32, 4) == [-1.0, -1.0, 1.0]   # blue on the left
    assert _rgb(x, 32, 59) == [1.0, -1.0, -1.0]  # red on the right
    # Without the tag the same pixels give top red / bottom blue.
    plain = load_image(stored, size=64)
    assert _rgb(plain, 4, 32) == [1.0, -1.0, -1.0] and _rgb(plain, 59, 32) == [-1.0, -1.0, 1.0]


# --------------------------------------------------------------------------- alpha
def test_fully_transparent_pixels_become_white() -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)          # black, alpha 0
    x = load_image(rgba, size=64)
    assert torch.allclose(x, torch.ones_like(x), atol=1e-6)  # +1 = white (compositing after scaling gives 0)


def test_half_transparent_black_becomes_mid_grey_zero() -> None:
    rgba = np.zeros((64, 64, 4), np.float32)
    rgba[..., 3] = 0.5
    x = load_image(rgba, size=64)
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-5)
    # uint8 alpha 128 is 0.502: within one 8-bit level of 0
    pil = Image.new("RGBA", (64, 64), (0, 0, 0, 128))
    assert torch.allclose(load_image(pil, size=64), torch.zeros(1, 3, 64, 64), atol=2 / 255)


def test_invisible_colour_does_not_bleed() -> None:
    rgba = np.zeros((64, 128, 4), np.float32)
    rgba[:, :64] = (1.0, 0.0, 0.0, 0.0)   # invisible red
    rgba[:, 64:] = (0.0, 0.0, 1.0, 1.0)   # opaque blue
    x = load_image(rgba, size=64, multiple=8)  # centre crop: columns 32..96 of the original
    assert _rgb(x, 32, 2) == [1.0, 1.0, 1.0]   # white, not red
    assert _rgb(x, 32, 61) == [-1.0, -1.0, 1.0]


def test_composite_on_white_formula() -> None:
    rgba = np.array([[[0.2, 0.4, 0.6, 0.25]]], np.float32)
    out = composite_on_white(rgba)
    assert np.allclose(out, [[[0.2 * 0.25 + 0.75, 0.4 * 0.25 + 0.75, 0.6 * 0.25 + 0.75]]])


# --------------------------------------------------------------------------- modes
def test_palette_image_matches_its_rgb_conversion() -> None:
    rgb = Image.new("RGB", (64, 64), (10, 200, 30))
    rgb.paste((250, 20, 90), (0, 0, 32, 64))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert palette.mode == "P"
    assert torch.allclose(load_image(palette, size=64), load_image(palette.convert("RGB"), size=64), atol=1e-6)


def test_palette_with_transparency_composites_on_white() -> None:
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    x = load_image(img, size=64)
    assert torch.allclose(x, torch.ones_like(x), atol=1e-6)


def test_greyscale_and_la() -> None:
    x = load_image(Image.new("L", (64, 64), 64), size=64)
    assert x.shape == (1, 3, 64, 64)
    assert torch.allclose(x, torch.full_like(x, 64 / 255 * 2 - 1), atol=1e-5)
    la = load_image(Image.new("LA", (64, 64), (0, 0)), size=64)
    assert torch.allclose(la, torch.ones_like(la), atol=1e-6)


def test_cmyk_becomes_rgb() -> None:
    x = load_image(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), size=64)  # no cyan -> red
    assert _rgb(x, 10, 10) == [1.0, -1.0, -1.0]


def test_sixteen_bit_greyscale() -> None:
    img = Image.fromarray(np.full((64, 64), 65535, np.uint16))
    assert img.mode.startswith("I")
    x = load_image(img, size=64)
    assert torch.allclose(x, torch.ones_like(x), atol=1e-5)


# --------------------------------------------------------------------------- sources, resize, crop
def test_resize_and_center_crop() -> None:
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 100:200] = 255  # only the centre square is white
    x = load_image(wide, size=64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert _rgb(x, 32, 32) == [1.0, 1.0, 1.0]
    big = load_image(Image.new("RGB", (800, 600), (0, 255, 0)))
    assert big.shape == (1, 3, 512, 512)


@pytest.mark.parametrize("source", [
    np.full((70, 90), 128, np.uint8),
    np.full((70, 90, 1), 128, np.uint8),
    np.full((70, 90, 3), 128 / 255, np.float64),
    torch.full((3, 70, 90), 128 / 255),
    torch.full((1, 3, 70, 90), 128, dtype=torch.uint8),
])
def test_array_and_tensor_sources(source) -> None:
    x = load_image(source, size=64)
    assert x.shape == (1, 3, 64, 64)
    assert torch.allclose(x, torch.full_like(x, 128 / 255 * 2 - 1), atol=1e-5)


def test_path_source(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    Image.new("RGB", (64, 64), BLUE).save(path)
    assert _rgb(load_image(str(path), size=64), 5, 5) == [-1.0, -1.0, 1.0]


def test_to_pil_round_trip() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    back = np.asarray(to_pil(load_image(pixels, size=64)))
    assert back.shape == (64, 64, 3) and np.abs(back.astype(int) - pixels).max() <= 1
    assert to_pil(torch.zeros(1, 1, 8, 8)).mode == "L"
    with pytest.raises(ValueError, match="batch of 2"):
        to_pil(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        to_pil(torch.full((3, 8, 8), float("nan")))


# --------------------------------------------------------------------------- errors
def test_too_small_image_names_the_minimum() -> None:
    with pytest.raises(ValueError, match="at least 64 pixels"):
        load_image(np.zeros((32, 100, 3), np.uint8))


@pytest.mark.parametrize("array", [np.zeros((0, 10, 3), np.uint8), np.zeros((10, 0), np.uint8)])
def test_empty_array(array: np.ndarray) -> None:
    with pytest.raises(ValueError, match="empty"):
        load_image(array)


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "not_an_image.png"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not_an_image.png"):
        load_image(path)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("bad, message", [
    (np.zeros((64, 64, 5), np.uint8), "HxWx4"),
    (np.zeros((2, 64, 64, 3), np.uint8), "HxWx4"),
    (np.full((64, 64, 3), 2.0, np.float32), r"\[0, 1\]"),
    (np.full((64, 64, 3), -0.5, np.float32), r"\(x \+ 1\) / 2"),
    (np.zeros((64, 64, 3), np.int16), "uint8, uint16 or float"),
    (torch.zeros(2, 3, 64, 64), "C, H, W"),
    ([[0, 1], [1, 0]], "cannot load"),
])
def test_bad_sources(bad, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_image(bad, size=64)


@pytest.mark.parametrize("size, multiple", [(100, 64), (0, 64), (64, 4), (60, 8), (True, 64)])
def test_bad_sizes(size, multiple) -> None:
    with pytest.raises(ValueError, match="multiple"):
        load_image(np.zeros((64, 64, 3), np.uint8), size=size, multiple=multiple)
