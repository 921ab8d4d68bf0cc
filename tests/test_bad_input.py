"""Issue 20: bad input gives a clear one-line error (or a warning), never a raw traceback and
never a silent truncation: gradient-carrying and meta-device latents, damaged weights files,
bad widget arguments, fractional counts, over-long SD prompts, degenerate statistics."""
from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.baselines import invert_null_text
from cfginv_lite.evidence import digit_sets, median_ratio, paired_ratio, spread
from cfginv_lite.models.digits import WEIGHTS_DIR

PROMPT = "a handwritten digit three"


# --------------------------------------------------------------------------- latents
def test_null_text_refuses_latents_that_require_grad(digits_model):
    guidance = cl.make_guidance(digits_model, [PROMPT], 3.0)
    z = torch.randn(1, 1, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match=r"require grad; pass latents.detach\(\)"):
        invert_null_text(digits_model, z, cl.timestep_grid(2), guidance, inner_steps=1, progress=False)
    result = invert_null_text(digits_model, z.detach(), cl.timestep_grid(2), guidance, inner_steps=1, progress=False)
    assert torch.isfinite(result.latents).all()


@pytest.mark.parametrize("method", ["naive", "null-text"])
def test_meta_device_latents_are_refused_clearly(method, digits_model):
    guidance = cl.make_guidance(digits_model, [PROMPT], 3.0)
    z = torch.empty(1, 1, 8, 8, device="meta")
    with pytest.raises(ValueError, match="'meta' device"):
        if method == "naive":
            cl.invert_naive(digits_model, z, cl.timestep_grid(2), guidance, progress=False)
        else:
            invert_null_text(digits_model, z, cl.timestep_grid(2), guidance, inner_steps=1, progress=False)


# --------------------------------------------------------------------------- damaged weights
def _damaged(tmp_path: Path, kind: str) -> Path:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / kind
    shutil.copytree(WEIGHTS_DIR, folder)
    weights = folder / "digits.safetensors"
    if kind in ("truncated", "empty", "not-safetensors"):
        data = weights.read_bytes()
        weights.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                             "not-safetensors": b"<html>404 not found</html>"}[kind])
        return folder
    state = load_file(weights)
    key = "unet.conv_in.weight"
    if kind == "nan":
        state[key][0] = float("nan")
    elif kind == "mis-sized":
        state[key] = torch.zeros(3, 3)
    elif kind == "missing-tensor":
        del state[key]
    save_file(state, weights)
    return folder


@pytest.mark.parametrize("kind, message", [
    ("truncated", "not a complete safetensors file"), ("empty", "not a complete safetensors file"),
    ("not-safetensors", "not a complete safetensors file"), ("nan", "NaN/inf values in 1 tensor"),
    ("mis-sized", "does not hold the weights of the digits model"),
    ("missing-tensor", "does not hold the weights of the digits model"),
])
def test_damaged_weights_files_give_one_line_errors(kind, message, tmp_path):
    folder = _damaged(tmp_path, kind)
    with pytest.raises(ValueError, match=message) as info:
        cl.load_model("digits", weights_dir=folder)
    assert "\n" not in str(info.value) and "train_digits" in str(info.value)


def test_weights_description_with_an_impossible_size(tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(WEIGHTS_DIR, folder)
    info = json.loads((folder / "digits.json").read_text())
    (folder / "digits.json").write_text(json.dumps({**info, "size": 7}))
    with pytest.raises(ValueError, match="gives size 7"):
        cl.load_model("digits", weights_dir=folder)


# --------------------------------------------------------------------------- widgets
@pytest.fixture(scope="module")
def trace():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_widgets import _trace

    return _trace("a")   # 6 steps, a batch of 2 images


@pytest.mark.parametrize("kwargs, name", [
    (dict(image=5), "image"), (dict(image=1.5), "image"), (dict(steps=[1.5]), "steps"), (dict(steps=[9]), "steps"),
    (dict(dpi=0), "dpi"), (dict(cell_inches=-1), "cell_inches"), (dict(channels="bogus"), "channels"),
    (dict(max_columns=0), "max_columns"), (dict(log_error="yes"), "log_error"), (dict(decode="clip"), "decode"),
])
def test_step_montage_checks_its_arguments(trace, kwargs, name):
    from cfginv_lite.widgets import step_montage

    with pytest.raises(ValueError, match=name):
        step_montage(trace, **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(image=5), "image"), (dict(max_frames=2.5), "max_frames"), (dict(max_latent_px=0), "max_latent_px"),
    (dict(panel_px=0), "panel_px"), (dict(interval_ms=0), "interval_ms"), (dict(dpi=0), "dpi"),
    (dict(channels="bogus"), "channels"),
])
def test_step_explorer_checks_its_arguments(trace, kwargs, name):
    pytest.importorskip("ipywidgets")
    from cfginv_lite.widgets import step_explorer

    with pytest.raises(ValueError, match=name):
        step_explorer(trace, **kwargs)


def test_widgets_refuse_a_non_trace():
    from cfginv_lite.widgets import step_montage

    with pytest.raises(ValueError, match="traces must be a Trace"):
        step_montage(None)


_SRC = np.zeros((2, 1, 8, 8))


@pytest.mark.parametrize("kwargs, name", [
    (dict(zoom=0), "zoom"),
    (dict(edits={"m": {0.5: np.zeros((1, 1, 8, 8))}}), r"edits\['m'\]\[0.5\] must have the shape"),
    (dict(edits={"m": [np.zeros((2, 1, 8, 8))]}), r"edits\['m'\] must be a dict"),
    (dict(source_labels=[1.5, 2]), "source_labels must be whole numbers"),
    (dict(success={"m": {0.5: np.zeros(1)}}), r"success\['m'\]\[0.5\] must hold one flag per image"),
    (dict(reconstructions={"x": _SRC}), r"reconstructions\['m'\] must be given"),
])
def test_edit_explorer_checks_its_arguments(kwargs, name):
    pytest.importorskip("ipywidgets")
    from cfginv_lite.widgets import edit_explorer

    args = dict(sources=_SRC, source_labels=[1, 2], target_labels=[2, 1], edits={"m": {0.5: _SRC}}) | kwargs
    with pytest.raises(ValueError, match=name):
        edit_explorer(**args)


# --------------------------------------------------------------------------- silent truncation
@pytest.mark.parametrize("per_digit", [2.5, 1.5, True])
def test_fractional_per_digit_is_refused(per_digit, digits_model):
    from cfginv_lite.data import real_digit_set

    with pytest.raises(ValueError, match="per_digit must be an integer"):
        digit_sets(digits_model, 1.0, cl.timestep_grid(2), per_digit=per_digit, cases=("real",))
    with pytest.raises(ValueError, match="per_digit must be an integer"):
        real_digit_set(per_digit)
    assert len(digit_sets(digits_model, 1.0, cl.timestep_grid(2), per_digit=np.int64(1), cases=("real",))["real"]) == 10


@pytest.fixture(scope="module")
def tiny_sd():
    from cfginv_lite.models.tiny import build_tiny_stable_diffusion

    return build_tiny_stable_diffusion(seed=0)


def test_over_long_sd_prompt_warns(tiny_sd):
    long_prompt = "a photo of " + "x y " * 40   # 4 + 80 tokens (no merges for x, y) + start/end
    with pytest.warns(UserWarning, match="exceed the text encoder's 77 tokens"):
        emb = tiny_sd.encode_prompt([long_prompt, "a photo"])
    assert emb.shape[:2] == (2, 77)    # still truncated, as the pipelines do, but no longer silently


def test_short_sd_prompts_do_not_warn(tiny_sd):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_sd.encode_prompt(["a photo of the cat", ""])
        tiny_sd.encode_prompt(["x" * 75])   # 75 tokens + start/end = 77: fits exactly


# --------------------------------------------------------------------------- statistics
def test_spread_needs_at_least_one_bootstrap_resample():
    with pytest.raises(ValueError, match="n_boot must be an integer >= 1"):
        spread([1.0, 2.0, 3.0], n_boot=0)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 1"):
        median_ratio([1.0, 2.0], [1.0, 2.0], n_boot=0)
    assert spread([1.0, 2.0, 3.0], n_boot=1).median == 2.0


def test_ratio_with_a_zero_median_is_an_error_not_inf():
    with pytest.raises(ValueError, match="median of b is 0"):
        median_ratio([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="b is 0 for 1 image"):
        paired_ratio([1.0, 2.0, 3.0], [0.0, 1.0, 1.0])


def test_ratio_interval_is_defined_when_some_resampled_medians_are_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # no divide-by-zero RuntimeWarning either
        r = median_ratio([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], n_boot=500)
    assert r.median == 2.0 and r.ci_high == np.inf and np.isfinite(r.ci_low)


@pytest.mark.parametrize("label", [3.7, 10, -1, True])
def test_fractional_or_out_of_range_digit_labels_are_refused(label):
    from cfginv_lite.data import digit_prompt, real_digits

    with pytest.raises(ValueError, match="digit label must be an integer in \\[0, 9\\]"):
        digit_prompt(label)
    with pytest.raises(ValueError, match="digit label must be an integer in \\[0, 9\\]"):
        real_digits([1, label])
    assert digit_prompt(np.int64(3)) == digit_prompt(torch.tensor(3)) == "a handwritten digit three"
