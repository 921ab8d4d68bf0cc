"""The embedded digits model: protocol, errors, determinism, and the two gates the mission needs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.data import load_digit_images, train_digit_classifier
from cfginv_lite.evidence import digit_sets, evaluate, median_ratio, spread
from cfginv_lite.experiment import digit_prompts, reconstruct
from cfginv_lite.sampling import generate, seeded_noise
from cfginv_lite.models import digits as digits_module
from cfginv_lite.models.digits import WEIGHTS_DIR
from protocol_check import assert_implements_protocol
from run_helpers import _digest

PROMPT = "a handwritten digit three"


def test_protocol_and_shapes(digits_model):
    images, _ = load_digit_images()
    assert_implements_protocol(digits_model, images[:3])
    assert digits_model.latent_shape == (1, 8, 8)
    emb = digits_model.encode_prompt(["a handwritten digit three", ""])
    assert emb.shape[0] == 2 and emb.ndim == 3
    images, _ = load_digit_images()
    assert images.min() >= -1 and images.max() <= 1 and images.shape == (1797, 1, 8, 8)
    assert torch.equal(digits_model.decode(digits_model.encode(images[:3])), images[:3])


def test_unknown_prompt_word_names_the_vocabulary(digits_model):
    with pytest.raises(ValueError, match="unknown word.*'eleven'.*knows: .*handwritten"):
        digits_model.encode_prompt(["a handwritten digit eleven"])
    with pytest.raises(ValueError, match="at most"):
        digits_model.encode_prompt(["a a a a a a a a a"])


def test_wrong_image_shape(digits_model):
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        digits_model.encode(torch.zeros(1, 3, 8, 8))


def test_same_seed_is_bitwise_identical(digits_model):
    prompts = ["a handwritten digit four", "a handwritten digit nine"]
    grid = cl.timestep_grid(10)
    a = generate(digits_model, prompts, 5.0, grid, seed=3)
    b = generate(digits_model, prompts, 5.0, grid, seed=3)
    c = generate(digits_model, prompts, 5.0, grid, seed=4)
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, c.latents)
    za = cl.invert_naive(digits_model, a.latents, grid, a.guidance, progress=False)
    zb = cl.invert_naive(digits_model, b.latents, grid, b.guidance, progress=False)
    assert torch.equal(za, zb)


@pytest.mark.slow
def test_quality_gate_classifier_recognises_generated_digits(digits_model):
    """>= 90% of 100 digits generated at CFG 3 with 50 DDIM steps are recognised as requested."""
    predict = train_digit_classifier()
    images, targets = load_digit_images()
    assert (predict(images[::5]) == targets[::5]).mean() > 0.97  # the judge itself is sound
    prompts, labels = digit_prompts(10)
    gen = generate(digits_model, prompts, 3.0, cl.timestep_grid(50), seed=0)
    accuracy = float((predict(gen.images) == np.array(labels)).mean())
    print(f"classifier accuracy on 100 generated digits (CFG 3, 50 steps): {accuracy:.3f}")
    assert accuracy >= 0.90


@pytest.mark.slow
def test_phenomenon_gate_naive_inversion_breaks_at_high_cfg(digits_model):
    """100 real digits inverted naively (20 steps): the median error at w=7.5 is >= 4x that at w=1.

    Notebook 02 measures x8.6 (bootstrap 95% interval 7.8-10.3) with these inputs; the gate asks
    for half of it, so a retrained model keeps the phenomenon the course is about.
    """
    grid = cl.timestep_grid(20)
    real = digit_sets(digits_model, 7.5, grid, per_digit=10, seed=0, cases=["real"])
    errors = {w: evaluate(digits_model, real, w, grid, method="naive")["real"].image_rmse for w in (1.0, 7.5)}
    ratio = median_ratio(errors[7.5], errors[1.0])
    print(f"naive image RMSE on 100 real digits, 20 steps: w=1 {spread(errors[1.0])}, w=7.5 {spread(errors[7.5])}; "
          f"ratio of medians {ratio.median:.2f} (95% interval {ratio.ci_low:.2f}-{ratio.ci_high:.2f})")
    assert ratio.ci_low >= 4


@pytest.mark.slow
def test_naive_inversion_at_cfg1_many_steps_reconstructs(digits_model):
    """At w = 1 and 100 steps naive inversion regenerates the image closely (measured bound)."""
    prompts, _ = digit_prompts(1)
    grid = cl.timestep_grid(100)
    gen = generate(digits_model, prompts, 1.0, grid, seed=1)
    rec = reconstruct(digits_model, gen.images, prompts, 1.0, grid, true_noise=gen.noise)
    print(f"w=1, 100 steps: image RMSE {float(rec.image_rmse.mean()):.4f}, "
          f"latent RMSE {float(rec.latent_rmse.mean()):.4f}")
    assert float(rec.image_rmse.max()) < 0.05


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def test_model_save_refuses_to_overwrite(digits_model, shipped_weights, tmp_path):
    import inspect

    before = _digest(shipped_weights)
    # No default folder any more (it was the shipped weights); never call save() bare here.
    assert inspect.signature(digits_module.DigitsModel.save).parameters["directory"].default is inspect.Parameter.empty
    with pytest.raises(FileExistsError, match="shipped"):
        digits_model.save(shipped_weights)
    assert _digest(shipped_weights) == before
    digits_model.save(tmp_path / "w")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        digits_model.save(tmp_path / "w")
    digits_model.save(tmp_path / "w", overwrite=True)


def test_digits_model_rejects_images_outside_minus_one_one(digits_model):
    from cfginv_lite.data import load_digit_images

    images, _ = load_digit_images()
    pixels = (images[:2] + 1) * 127.5                      # [0, 255]
    with pytest.raises(ValueError, match=r"\[-1, 1\].*x / 127.5 - 1"):
        digits_model.encode(pixels)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        reconstruct(digits_model, pixels, [PROMPT] * 2, 3.0, cl.timestep_grid(2))
    with pytest.raises(ValueError, match="floating point"):
        digits_model.encode(pixels.to(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_digits_model_converts_float_latents_like_sd(digits_model, dtype):
    grid = cl.timestep_grid(3)
    g = cl.make_guidance(digits_model, [PROMPT], 3.0)
    z = seeded_noise((1, 1, 8, 8), 0)
    reference = cl.sample_ddim(digits_model, z, grid, g, progress=False)
    out = cl.sample_ddim(digits_model, z.to(dtype), grid, g, progress=False)
    assert out.dtype == dtype
    # float64 latents: the network still runs in float32, only the DDIM arithmetic is float64, so
    # the two runs differ by float32 rounding fed through 3 network evaluations (measured 2.0e-6
    # natively, 4.6e-6 on the baseline x86-64 paths). Bound: each float32 evaluation is within a few
    # hundred ulp (2**-24, |eps| ~ 1) ~ 1e-5 of exact, so 3 steps stay within 1e-4; half precision: 0.1.
    assert torch.allclose(out.float(), reference, atol=0.1 if dtype != torch.float64 else 1e-4)
    eps = digits_model.predict_noise(z.to(dtype), torch.tensor([10.0]), g.cond)
    assert eps.dtype == dtype


def test_digits_weights_without_description(tmp_path):
    shutil.copy(digits_module.WEIGHTS_DIR / "digits.safetensors", tmp_path)
    with pytest.raises(ValueError, match="digits.json"):
        cl.load_model("digits", weights_dir=tmp_path)


def test_digits_predict_noise_and_decode_check_their_inputs(digits_model):
    emb = digits_model.encode_prompt([PROMPT, PROMPT])
    with pytest.raises(ValueError, match="timestep labels"):
        digits_model.predict_noise(torch.zeros(2, 1, 8, 8), torch.tensor([1.0, 2.0, 3.0]), emb)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        digits_model.decode(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("prompts", [None, b"one", 3])
def test_encode_prompt_rejects_non_prompts_clearly(digits_model, prompts):
    with pytest.raises(ValueError, match="string or a list"):
        digits_model.encode_prompt(prompts)


# --------------------------------------------------------------------------- bad input (issue 20; was tests/test_bad_input.py)
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
