"""load_image / to_pil: orientation, modes, alpha compositing in [0, 1], resize + crop, errors."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def _dark_sixteen_bit() -> np.ndarray:
    values = np.full((64, 64), 200, np.uint16)           # dark: 200 / 65535
    values[:, :32] = 100
    return values


def test_mode_i_scale_comes_from_the_mode_not_the_data():
    values = _dark_sixteen_bit()
    as_i16 = Image.fromarray(values)
    assert as_i16.mode == "I;16"
    as_i = as_i16.convert("I")
    expected = load_image(as_i16, size=64)
    assert torch.allclose(load_image(as_i, size=64), expected, atol=1e-6)
    assert float(expected.max()) == pytest.approx(200 / 65535 * 2 - 1, abs=1e-5)   # dark, not 200/255
    assert torch.allclose(load_image(values, size=64), expected, atol=1e-6)       # uint16 array: same scale


def test_mode_i_values_beyond_sixteen_bits_are_an_error():
    with pytest.raises(ValueError, match="16-bit"):
        load_image(Image.fromarray(np.full((64, 64), 70000, np.int32)), size=64)


def test_mode_f_follows_the_float_rule_of_arrays():
    inside = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert torch.allclose(load_image(Image.fromarray(inside), size=64), load_image(inside, size=64), atol=1e-6)
    outside = inside * 255
    with pytest.raises(ValueError, match=r"\[0, 1\]") as from_pil:
        load_image(Image.fromarray(outside), size=64)
    with pytest.raises(ValueError, match=r"\[0, 1\]") as from_numpy:
        load_image(outside, size=64)
    assert "x / 255" in str(from_pil.value) and "x / 255" in str(from_numpy.value)


def test_decompression_bomb_is_a_value_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # 90,000 pixels > 2 x the limit: PIL refuses
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(path, size=64)


def test_fifo_path_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result: dict[str, BaseException] = {}

    def run() -> None:
        try:
            load_image(fifo, size=64)
        except BaseException as err:  # noqa: BLE001
            result["err"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # blocked in open(): unblock it so the test run can go on, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(5)
        pytest.fail("load_image blocked on a FIFO")
    assert isinstance(result.get("err"), ValueError) and "regular file" in str(result["err"])


def test_url_is_not_mangled():
    with pytest.raises(ValueError) as info:
        load_image("https://example.com/images/cat.png")
    assert "'https://example.com/images/cat.png'" in str(info.value) and "download" in str(info.value).lower()


@pytest.mark.parametrize("values, good, bad", [
    (np.full((64, 64, 3), 200.0), "[0, 255]", "(x + 1) / 2"),
    (np.full((64, 64, 3), 40000.0), "[0, 65535]", "(x + 1) / 2"),
])
def test_range_hint_names_the_right_range(values, good, bad):
    with pytest.raises(ValueError) as info:
        load_image(values, size=64)
    assert good in str(info.value) and bad not in str(info.value)


def test_to_pil_refuses_integer_and_empty_tensors():
    from cfginv_lite.images import to_pil

    with pytest.raises(ValueError, match="float tensor"):
        to_pil(torch.full((3, 8, 8), 200, dtype=torch.uint8))     # would be an all-white picture
    with pytest.raises(ValueError, match="empty"):
        to_pil(torch.zeros(1, 3, 0, 0))


def test_premultiplied_la_image_loads():
    x = load_image(Image.new("La", (64, 64), (0, 0)), size=64)
    assert torch.allclose(x, torch.ones_like(x))   # fully transparent -> white


_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float16, np.float32, np.float64, np.bool_]


@st.composite
def _arrays(draw):
    dtype = draw(st.sampled_from(_DTYPES))
    h, w = draw(st.integers(0, 20)), draw(st.integers(0, 20))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4, 5]))
    shape = (h, w) if channels is None else (h, w, channels)
    if np.issubdtype(dtype, np.floating):
        values = draw(st.sampled_from([0.0, 0.5, 1.0, -0.5, 2.0, 255.0, 1e30, float("nan"), float("inf")]))
        with np.errstate(all="ignore"):  # 1e30 in float16 is inf: a case of its own
            array = np.full(shape, values).astype(dtype)
    elif dtype is np.bool_:
        array = np.full(shape, draw(st.booleans()), dtype=dtype)
    else:
        array = np.full(shape, draw(st.integers(0, int(np.iinfo(dtype).max))), dtype=dtype)
    if array.size and draw(st.booleans()):
        array.flat[0] = draw(st.sampled_from([0, 1])) if dtype is not np.bool_ else False
    return array


def _assert_loaded_or_value_error(source) -> None:
    try:
        x = load_image(source, size=8, multiple=8)
    except ValueError:
        return
    assert x.shape == (1, 3, 8, 8) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and float(x.min()) >= -1.0 and float(x.max()) <= 1.0


@settings(max_examples=80, deadline=None)
@given(array=_arrays(), as_tensor=st.booleans())
def test_fuzz_load_image_arrays_and_tensors(array, as_tensor):
    source = array
    if as_tensor and array.ndim == 3 and array.dtype not in (np.uint16,):
        source = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    _assert_loaded_or_value_error(source)


def _load_or_error(source):
    try:
        return load_image(source, size=8, multiple=8)
    except ValueError:
        return "ValueError"


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([np.uint8, np.uint16, np.float32]), h=st.integers(8, 14), w=st.integers(8, 14),
       data=st.data())
def test_fuzz_same_pixels_load_the_same_on_every_path(dtype, h, w, data):
    """The scale comes from the dtype/mode: an array, its PIL image (and mode "I", and a tensor) agree."""
    if dtype is np.float32:
        elements = st.floats(-2.0, 300.0, width=32) if data.draw(st.booleans()) else st.floats(0.0, 1.0, width=32)
    else:
        elements = st.integers(0, int(np.iinfo(dtype).max))
    values = np.array(data.draw(st.lists(elements, min_size=h * w, max_size=h * w)), dtype=dtype).reshape(h, w)
    sources = [values, Image.fromarray(values)]
    if dtype is np.uint16:
        sources.append(Image.fromarray(values).convert("I"))
    else:
        sources.append(torch.from_numpy(values.copy())[None])
    results = [_load_or_error(src) for src in sources]
    if any(isinstance(r, str) for r in results):
        assert all(isinstance(r, str) for r in results), [type(r).__name__ for r in results]
    else:
        for r in results[1:]:
            assert torch.allclose(r, results[0], atol=1e-5)


_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
          "I", "I;16", "I;16B", "I;16L", "F"]


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(_MODES), w=st.integers(1, 24), h=st.integers(1, 24), colour=st.integers(0, 255),
       f_value=st.sampled_from([0.0, 0.25, 1.0, 1.5, -1.0, 300.0]), i_value=st.sampled_from([0, 255, 65535, 70000, -5]))
def test_fuzz_load_image_pil_modes(mode, w, h, colour, f_value, i_value):
    if mode == "F":
        img = Image.new(mode, (w, h), f_value)
    elif mode == "I":
        img = Image.new(mode, (w, h), i_value)
    elif mode.startswith("I;16"):
        img = Image.new(mode, (w, h), max(0, min(i_value, 65535)))
    else:
        bands = len(Image.new(mode, (1, 1)).getbands())
        img = Image.new(mode, (w, h), colour if bands == 1 else (colour,) * bands)
    _assert_loaded_or_value_error(img)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00"]),
       body=st.binary(max_size=200), name=st.sampled_from(["x.png", "x.jpg", "x", "x.gif"]))
def test_fuzz_load_image_files(tmp_path, header, body, name):
    path = tmp_path / name
    path.write_bytes(header + body)
    _assert_loaded_or_value_error(path)


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=40))
def test_fuzz_load_image_path_strings(text):
    try:
        load_image(text, size=8, multiple=8)
    except (ValueError, FileNotFoundError):
        pass
