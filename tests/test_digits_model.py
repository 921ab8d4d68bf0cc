"""The embedded digits model: protocol, errors, determinism, and the two gates the mission needs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.data import load_digit_images, train_digit_classifier
from cfginv_lite.evidence import digit_sets, evaluate, median_ratio, spread
from cfginv_lite.experiment import digit_prompts, generate, reconstruct
from protocol_check import assert_implements_protocol


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


def test_naive_inversion_at_cfg1_many_steps_reconstructs(digits_model):
    """At w = 1 and 100 steps naive inversion regenerates the image closely (measured bound)."""
    prompts, _ = digit_prompts(1)
    grid = cl.timestep_grid(100)
    gen = generate(digits_model, prompts, 1.0, grid, seed=1)
    rec = reconstruct(digits_model, gen.images, prompts, 1.0, grid, true_noise=gen.noise)
    print(f"w=1, 100 steps: image RMSE {float(rec.image_rmse.mean()):.4f}, "
          f"latent RMSE {float(rec.latent_rmse.mean()):.4f}")
    assert float(rec.image_rmse.max()) < 0.05
