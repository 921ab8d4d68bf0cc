"""Editing helpers: prompt swap, prompt-to-prompt word swap, partial inversion, style proxies.

Small sizes (3 digits, 6 steps) so the file runs in seconds on one CPU thread.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cfginv_lite import make_guidance, timestep_grid
from cfginv_lite.data import digit_prompt, real_digits
from cfginv_lite.ddim import invert_naive, sample_ddim
from cfginv_lite.guidance import Guidance
from cfginv_lite.exact import invert_bdia, sample_bdia
from cfginv_lite.editing import (
    SwapState,
    WordSwapAttention,
    attention_control,
    changed_tokens,
    edit,
    partial_grid,
)
from cfginv_lite.style_metrics import style_distance, style_features, style_scales

LABELS, TARGETS = [3, 1, 7], [8, 4, 2]
STEPS = 6
# The controlled layers compute attention with bmm, the default processor with SDPA. In float32
# the two differ by kernel rounding that depends on the CPU (1e-4 was read off one machine; BDIA
# needed 5x that on the baseline x86-64 paths), so the identity checks run the digits model in
# float64 (tests/conftest.py::digits_model_f64): one evaluation is then exact to ~1e-12, and six
# guided steps (BDIA carries each step's rounding into the next) keep it below ~1e-10. Measured in
# float64: 1.1e-14 (swap) and 4.6e-14 (BDIA pair) natively, 8e-15 and 3.6e-14 on the baseline paths.
# ATOL = 1e-9 is ~1e7 times below the effects the tests assert (> 1e-2).
ATOL = 1e-9


@pytest.fixture(scope="module")
def setup(digits_model_f64):
    model = digits_model_f64
    x = model.encode(real_digits(LABELS, seed=0))
    grid = timestep_grid(STEPS)
    g = make_guidance(model, [digit_prompt(d) for d in LABELS], 5.0)
    noise = invert_naive(model, x, grid, g, label="destination", progress=False)
    return model, x, grid, g, noise, [digit_prompt(d) for d in TARGETS]


def _swapped(g: Guidance, model, prompts) -> Guidance:
    return Guidance(model.encode_prompt(prompts), g.uncond, g.scale, g.uncond_per_step, g.uncond_grid)


def test_tau_zero_is_a_plain_prompt_swap(setup):
    model, _, grid, g, noise, targets = setup
    out = edit(model, noise, grid, g, targets, tau=0.0, progress=False)
    swap = sample_ddim(model, noise, grid, _swapped(g, model, targets), progress=False)
    torch.testing.assert_close(out.edited, swap, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.reconstructed, sample_ddim(model, noise, grid, g, progress=False), atol=ATOL, rtol=0)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0])
def test_unchanged_prompt_reproduces_the_reconstruction(setup, tau):
    model, _, grid, g, noise, _ = setup
    same = [digit_prompt(d) for d in LABELS]
    out = edit(model, noise, grid, g, same, tau=tau, progress=False)
    rec = sample_ddim(model, noise, grid, g, progress=False)
    torch.testing.assert_close(out.edited, rec, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.reconstructed, rec, atol=ATOL, rtol=0)


def test_word_swap_changes_the_edit_and_only_the_edit(setup):
    model, _, grid, g, noise, targets = setup
    rows: list[dict] = []
    swap = edit(model, noise, grid, g, targets, tau=0.0, progress=False)
    p2p = edit(model, noise, grid, g, targets, tau=1.0, callback=rows.append, progress=False)
    torch.testing.assert_close(p2p.reconstructed, swap.reconstructed, atol=ATOL, rtol=0)  # source row untouched
    assert (p2p.edited - swap.edited).abs().max() > 1e-2  # the maps were replaced
    assert [r["replaced"] for r in rows] == [True] * STEPS
    half: list[dict] = []
    edit(model, noise, grid, g, targets, tau=0.5, callback=half.append, progress=False)
    assert [r["replaced"] for r in half] == [True] * 3 + [False] * 3


def _cross_layers(model) -> int:
    return sum(1 for name in model.unet.attn_processors if "attn2" in name)


def test_processor_replaces_cond_edit_rows_of_cross_attention_only(setup):
    model, _, grid, g, noise, targets = setup
    n = noise.shape[0]
    emb = torch.cat([g.uncond, g.uncond, g.cond, model.encode_prompt(targets)])
    z = torch.cat([noise] * 4)
    labels = torch.full((4 * n,), 500.0)
    plain = model.predict_noise(z, labels, emb)
    state = SwapState(batch=n, active=True)
    with attention_control(model, state):
        swapped = model.predict_noise(z, labels, emb)
    assert state.calls == _cross_layers(model) > 0  # every cross-attention layer, no self-attention one
    torch.testing.assert_close(swapped[:3 * n], plain[:3 * n], atol=ATOL, rtol=0)  # uncond rows, cond source
    assert (swapped[3 * n:] - plain[3 * n:]).abs().max() > 1e-3
    # With the source's probabilities the cond-edit row attends like the cond-source row:
    # only the values (the target words) differ. An empty token mask replaces nothing.
    state = SwapState(batch=n, active=True, tokens=torch.zeros(emb.shape[1], dtype=torch.bool))
    with attention_control(model, state):
        none = model.predict_noise(z, labels, emb)
    torch.testing.assert_close(none, plain, atol=ATOL, rtol=0)


def test_inactive_processor_delegates_bit_for_bit(setup):
    model, _, _, g, noise, _ = setup
    n = noise.shape[0]
    emb = torch.cat([g.uncond, g.uncond, g.cond, g.cond])
    z, labels = torch.cat([noise] * 4), torch.full((4 * n,), 300.0)
    plain = model.predict_noise(z, labels, emb)
    with attention_control(model, SwapState(batch=n, active=False)):
        assert torch.equal(model.predict_noise(z, labels, emb), plain)


def test_processors_restored_even_after_an_error(setup):
    model = setup[0]
    before = dict(model.unet.attn_processors)
    with pytest.raises(RuntimeError):
        with attention_control(model, SwapState(batch=1)):
            assert all(isinstance(p, WordSwapAttention) for p in model.unet.attn_processors.values())
            raise RuntimeError("boom")
    after = model.unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_changed_tokens_marks_the_swapped_word(setup):
    model = setup[0]
    mask = changed_tokens(model, "a handwritten digit three", "a handwritten digit eight")
    assert mask.tolist() == [[False, False, False, True] + [False] * 4]


def test_token_mask_edit_lies_between_swap_and_full_replacement(setup):
    model, _, grid, g, noise, targets = setup
    mask = changed_tokens(model, [digit_prompt(d) for d in LABELS], targets)
    out = edit(model, noise, grid, g, targets, tau=1.0, tokens=mask, progress=False)
    assert torch.isfinite(out.edited).all() and out.edited.shape == noise.shape


def test_partial_inversion_start_step(setup):
    model, x, grid, g, _, _ = setup
    k = 2
    short = partial_grid(grid, k)
    assert short == grid[:-k]
    z_mid = invert_naive(model, x, short, g, progress=False)
    out = edit(model, z_mid, grid, g, [digit_prompt(d) for d in LABELS], tau=1.0, start_step=k, progress=False)
    torch.testing.assert_close(out.edited, sample_ddim(model, z_mid, short, g, progress=False), atol=ATOL, rtol=0)


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_bdia_pair_edit_reconstructs_with_bdias_own_sampler(setup, gamma):
    """With a BDIA pair the source row is BDIA's own regeneration: the input back, to round-off."""
    model, x, grid, g, _, targets = setup
    z_top, z_below = invert_bdia(model, x, grid, g, gamma=gamma, progress=False)
    own = sample_bdia(model, z_top, grid, g, gamma=gamma, partner=z_below, progress=False)
    same = edit(model, z_top, grid, g, [digit_prompt(d) for d in LABELS], tau=0.5, partner=z_below, gamma=gamma,
                progress=False)
    # BDIA carries each step's rounding into the next one through its correction term (float32:
    # up to 1.2e-4 between the two attention kernels on the baseline x86-64 paths; float64: ATOL).
    atol = ATOL
    torch.testing.assert_close(same.reconstructed, own, atol=atol, rtol=0)
    torch.testing.assert_close(same.edited, own, atol=atol, rtol=0)   # unchanged prompt: the reconstruction
    if gamma == 1.0:
        assert (own - x).abs().max() < 1e-3                           # exact w.r.t. its own sampler
    swap = edit(model, z_top, grid, g, targets, tau=0.0, partner=z_below, gamma=gamma, progress=False)
    ref = sample_bdia(model, z_top, grid, _swapped(g, model, targets), gamma=gamma, partner=z_below, progress=False)
    torch.testing.assert_close(swap.edited, ref, atol=atol, rtol=0)   # tau = 0: BDIA with the target prompt
    assert (swap.edited - own).abs().max() > 0.1
    with pytest.raises(ValueError, match="start_step must be 0 when editing a BDIA pair"):
        edit(model, z_top, grid, g, targets, partner=z_below, start_step=1, progress=False)
    with pytest.raises(ValueError, match="partner must be a tensor shaped like noise"):
        edit(model, z_top, grid, g, targets, partner=z_below[:1], progress=False)
    with pytest.raises(ValueError, match="gamma"):
        edit(model, z_top, grid, g, targets, partner=z_below, gamma=0.0, progress=False)


def test_null_text_embeddings_are_used_per_step(setup):
    model, _, grid, g, noise, targets = setup
    per_step = tuple(g.uncond + 0.01 * i for i in range(STEPS))
    nt = Guidance(g.cond, g.uncond, g.scale, per_step, tuple(grid))
    out = edit(model, noise, grid, nt, targets, progress=False)
    torch.testing.assert_close(out.reconstructed, sample_ddim(model, noise, grid, nt, progress=False), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="grid"):
        edit(model, noise, timestep_grid(STEPS + 1), nt, targets, progress=False)


# Identity checks on the random-weight tiny SD run in float64. In float32 the two attention code
# paths (bmm in the controlled layers, SDPA in the default processor) differ by a few ulp of
# latents that reach ~60, amplified over the guided steps: 1.1e-4 and 1.4e-4 on two AVX-512
# CPUs against a 1e-4 tolerance, so no fixed float32 tolerance is CPU-independent. In float64
# the same rounding is ~2**-52 * 60 * (a few hundred operations) ~ 1e-12 (measured: 2.2e-13);
# 1e-9 leaves over three orders of margin and is ~1e8 times below the word swap's own effect (0.17).
F64_ATOL = 1e-9


def test_tiny_stable_diffusion_runs_the_same_helpers():
    from cfginv_lite.models.tiny import build_tiny_stable_diffusion

    model = build_tiny_stable_diffusion(seed=0, dtype=torch.float64)
    grid = timestep_grid(3)
    g = make_guidance(model, ["a photo of a cat"], 7.5)
    noise = torch.randn(1, *model.latent_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = ["a photo of a dog"]
    swap = edit(model, noise, grid, g, target, tau=0.0, progress=False)
    ref = sample_ddim(model, noise, grid, _swapped(g, model, target), progress=False)
    assert swap.edited.dtype == torch.float64
    torch.testing.assert_close(swap.edited, ref, atol=F64_ATOL, rtol=0)
    mask = changed_tokens(model, ["a photo of a cat"], target)
    assert mask.any() and not mask[0, :5].any()  # the tiny byte-level tokenizer splits words; the prefix is shared
    p2p = edit(model, noise, grid, g, target, tau=1.0, tokens=mask, progress=False)
    torch.testing.assert_close(p2p.reconstructed, swap.reconstructed, atol=F64_ATOL, rtol=0)
    # the word swap must change the edit: a processor that did nothing would pass the lines above
    assert (p2p.edited - swap.edited).abs().max() > 1e3 * F64_ATOL
    assert torch.isfinite(p2p.edited).all()


def test_bad_input(setup, analytic_model):
    model, _, grid, g, noise, targets = setup
    with pytest.raises(ValueError, match="tau"):
        edit(model, noise, grid, g, targets, tau=1.5, progress=False)
    with pytest.raises(ValueError, match="start_step"):
        edit(model, noise, grid, g, targets, start_step=STEPS, progress=False)
    with pytest.raises(ValueError, match="target prompts"):
        edit(model, noise, grid, g, targets[:2], progress=False)
    with pytest.raises(ValueError, match="tokens"):
        edit(model, noise, grid, g, targets, tokens=torch.ones(3, dtype=torch.bool), progress=False)
    with pytest.raises(ValueError, match="guidance"):
        edit(model, noise, grid, 7.5, targets, progress=False)
    with pytest.raises(ValueError, match="start_step"):
        partial_grid(grid, len(grid) - 1)
    with pytest.raises(ValueError, match="UNet"):
        z = torch.zeros(1, *analytic_model.latent_shape)
        ga = make_guidance(analytic_model, ["a"], 2.0)
        edit(analytic_model, z, grid, ga, ["b"], progress=False)


# --------------------------------------------------------------------------- style proxies
def _stroke(col: int, slant: float = 0.0, width: int = 1) -> torch.Tensor:
    img = -torch.ones(1, 1, 8, 8)
    for r in range(1, 7):
        c = col + int(round(slant * (r - 3.5)))
        img[0, 0, r, c:c + width] = 1.0
    return img


def test_style_features_read_ink_slant_and_position():
    f = style_features(torch.cat([_stroke(3), _stroke(4), _stroke(3, width=2), _stroke(3, slant=0.6)]))
    ink, slant, row, col = f.T
    assert ink[2] == pytest.approx(2 * ink[0]) and ink[0] == pytest.approx(6 / 64)
    assert col[1] - col[0] == pytest.approx(1.0) and row[0] == pytest.approx(3.5)
    assert slant[0] == pytest.approx(0.0) and slant[3] > 0.4
    assert style_features(-torch.ones(1, 1, 8, 8))[0, 0] == 0.0


def test_style_distance():
    imgs = torch.cat([_stroke(2), _stroke(3, slant=0.6), _stroke(4, width=2)])
    scales = style_scales(imgs)
    assert scales.shape == (4,) and np.all(scales[[0, 1, 3]] > 0) and scales[2] == 0  # every stroke at one height
    scales = np.where(scales > 0, scales, 1.0)
    assert np.allclose(style_distance(imgs, imgs, scales), 0.0)
    d = style_distance(imgs, imgs.flip(0), scales)
    assert d[0] > 0 and d[1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="scales"):
        style_distance(imgs, imgs, np.zeros(4))
    with pytest.raises(ValueError, match="same size|one size"):
        style_distance(imgs, imgs[:2], scales)
    with pytest.raises(ValueError, match="images"):
        style_features(torch.zeros(2, 3, 8, 8))
