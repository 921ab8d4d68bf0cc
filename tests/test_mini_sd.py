"""The mini-sd model (a latent diffusion model like SD, on MNIST): data split, protocol, errors, gates.

Fast tests run on one thread in seconds; the full-size gates (100 generated digits at 50
steps, 1,000 VAE round trips, 100 inversions) are recomputed only with ``-m slow``, and their
committed measurement (``docs/mini_sd_gates.json``) is checked here against the same bounds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite import mnist
from cfginv_lite.models import mini_sd
from cfginv_lite.quality import bootstrap_accuracy, generation_accuracy, naive_phenomenon, reconstruction_rmse
from protocol_check import assert_implements_protocol

ROOT = Path(__file__).resolve().parents[1]
GATES = ROOT / "docs" / "mini_sd_gates.json"

# Bounds of the gates. Full size (docs/mini_sd_gates.json, `-m slow`) and the fast versions
# below; each is the measured value with a margin, the measurements are in the comments.
GATE_ACCURACY_CI_LOW = 0.90      # (a) 100 digits, CFG 3, 50 steps: lower end of the 95% interval (measured 100/100, 1.00-1.00)
GATE_VAE_MEDIAN = 0.07           # (b) median RMSE on the 1,000 held-out images (measured 0.048, IQR 0.040-0.056)
GATE_RATIO_CI_LOW = 1.5          # (c) median RMSE at CFG 7.5 / at CFG 1, 100 held-out digits, 20 steps (measured 2.27, 95% interval 1.94-2.70)
FAST_ACCURACY = 0.85             # 20 digits, CFG 3, 20 steps (measured 20/20)
FAST_VAE_MEDIAN = 0.07           # 200 held-out images (measured 0.049)
FAST_RATIO = 2.0                 # 20 held-out digits, 20 steps (measured 3.00)


@pytest.fixture(scope="module")
def model():
    return cl.load_model("mini-sd")


@pytest.fixture(scope="module")
def judge():
    return mnist.train_mnist_classifier()


# --------------------------------------------------------------------------- data
@pytest.mark.slow
def test_split_is_stratified_disjoint_and_reproducible(tmp_path, monkeypatch):
    train, held = mnist.split_indices()
    assert len(train) == 4000 and len(held) == 1000 and not set(train) & set(held)
    x, y = mnist.load_mnist_split("train")
    xh, yh = mnist.load_mnist_split("heldout")
    assert x.shape == (4000, 1, 32, 32) and xh.shape == (1000, 1, 32, 32) and x.dtype == torch.float32
    assert np.bincount(y).tolist() == [400] * 10 and np.bincount(yh).tolist() == [100] * 10
    assert x.min() == -1 and x.max() == 1 and (x[..., :2, :] == -1).all()   # padding is background
    assert mnist.load_mnist_split("heldout", size=28)[0].shape == (1000, 1, 28, 28)
    # A fresh cache rebuilds exactly the same split (fixed seed), written atomically there.
    monkeypatch.setenv("CFGINV_LITE_CACHE", str(tmp_path / "cache"))
    train2, held2 = mnist.split_indices()
    assert np.array_equal(train, train2) and np.array_equal(held, held2)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [mnist.CACHE_NAME]
    assert torch.equal(mnist.load_mnist_split("heldout")[0], xh)


def test_heldout_digit_set_is_ordered_and_seeded():
    images, labels = mnist.heldout_digit_set(3, seed=1)
    assert images.shape == (30, 1, 32, 32) and labels == [d for d in range(10) for _ in range(3)]
    again, _ = mnist.heldout_digit_set(3, seed=1)
    other, _ = mnist.heldout_digit_set(3, seed=2)
    assert torch.equal(images, again) and not torch.equal(images, other)
    assert len({tuple(im.flatten().tolist()) for im in images}) == 30          # distinct images
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match="per_digit"):
            mnist.heldout_digit_set(bad)
    with pytest.raises(ValueError, match="split must be one of"):
        mnist.load_mnist_split("test")
    with pytest.raises(ValueError, match="size must be"):
        mnist.load_mnist_split("train", size=64)
    with pytest.raises(ValueError, match="0..9"):
        mnist.heldout_digits([3, 10])


# --------------------------------------------------------------------------- the model
def test_loading_and_protocol(model):
    assert model.name == "mini-sd" and "mini-sd" in cl.MODEL_NAMES
    images, _ = mnist.heldout_digit_set(1)
    assert_implements_protocol(model, images[:3])
    assert model.latent_shape == (4, 8, 8) and 0 < model.scaling_factor < 100
    info = json.loads((mini_sd.WEIGHTS_DIR / "mini_sd.json").read_text())
    assert info["scaling_factor"] == model.scaling_factor and info["weights_dtype"] == "float16"
    assert info["train_seconds"] > 0 and "train_mini_sd" in info["command"]
    # The scaled training latents have unit standard deviation, as SD's scaling factor makes them.
    x, _ = mnist.load_mnist_split("train")
    assert abs(float(model.encode(x[:500]).std()) - 1) < 0.1


def test_encode_decode_and_noise_prediction(model):
    images, _ = mnist.heldout_digit_set(1)
    z = model.encode(images)
    assert torch.equal(z, model.encode(images))                                  # the posterior mean
    z1 = model.encode(images, generator=torch.Generator().manual_seed(0))
    z2 = model.encode(images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z1, z2) and not torch.equal(z1, z)                        # a seeded sample
    emb = model.encode_prompt(["", "a handwritten digit seven"])
    z64 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    eps = model.predict_noise(z64, torch.tensor([10.5, 900.0]), emb)
    assert eps.dtype == torch.float64 and eps.shape == z64.shape
    assert model.decode(z64).dtype == torch.float64


def test_bad_inputs_are_clear_errors(model, tmp_path):
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        model.encode(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\[-1, 1\]|255"):
        model.encode(torch.full((1, 1, 32, 32), 200.0))
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        model.decode(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="unknown word"):
        model.encode_prompt(["a handwritten digit eleven"])
    with pytest.raises(ValueError, match="device= and weights_dir="):
        cl.load_model("mini-sd", dtype="fp16")
    with pytest.raises(FileNotFoundError, match="train_mini_sd"):
        cl.load_model("mini-sd", weights_dir=tmp_path)
    (tmp_path / "mini_sd.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a mini-sd weights description"):
        cl.load_model("mini-sd", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="scaling_factor"):
        mini_sd.MiniSDModel(model.vae, model.text_encoder, model.unet, scaling_factor=float("nan"))


def test_save_round_trip_refuses_overwrite_and_nan(model, tmp_path):
    path = model.save(tmp_path / "w", metadata={"note": "test"})
    again = cl.load_model("mini-sd", weights_dir=path.parent)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = model.encode_prompt(["", "the digit two"])
    assert torch.equal(again.predict_noise(z, torch.tensor([5.0, 500.0]), emb),
                       model.predict_noise(z, torch.tensor([5.0, 500.0]), emb))   # fp16 weights load back exactly
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(path.parent)
    with pytest.raises(FileExistsError, match="shipped"):
        model.save(mini_sd.WEIGHTS_DIR)
    broken = cl.load_model("mini-sd", weights_dir=path.parent)
    next(broken.unet.parameters()).data.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        broken.save(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


def test_trainer_validates_arguments_before_training(tmp_path, capsys):
    from cfginv_lite.models import train_mini_sd

    with pytest.raises(ValueError, match="dropout"):
        train_mini_sd.check_train_args(dropout=1.0)
    with pytest.raises(ValueError, match="unknown training argument"):
        train_mini_sd.check_train_args(steps=3)
    with pytest.raises(SystemExit) as info:
        train_mini_sd.main(["--vae-steps", "0", "--out", str(tmp_path / "x")])
    assert info.value.code == 2 and "vae_steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        train_mini_sd.main(["--out", str(mini_sd.WEIGHTS_DIR)])
    assert info.value.code == 2 and "--force" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_trainer_runs_and_saves_a_loadable_model(tmp_path):
    from cfginv_lite.models import train_mini_sd

    torch.set_num_threads(1)
    out = tmp_path / "w"
    assert train_mini_sd.main(["--vae-steps", "2", "--unet-steps", "2", "--vae-batch", "4", "--batch", "4",
                               "--out", str(out), "--no-progress"]) == 0
    info = json.loads((out / "mini_sd.json").read_text())
    assert info["vae_steps"] == 2 and info["scaling_factor"] > 0 and "--vae-steps 2" in info["command"]
    assert cl.load_model("mini-sd", weights_dir=out).latent_shape == (4, 8, 8)
    before = (out / "mini_sd.safetensors").read_bytes()
    with pytest.raises(SystemExit) as info:   # existing weights: refused before any training
        train_mini_sd.main(["--out", str(out), "--no-progress"])
    assert info.value.code == 2 and (out / "mini_sd.safetensors").read_bytes() == before


# --------------------------------------------------------------------------- gates (fast)
def test_bootstrap_accuracy():
    acc = bootstrap_accuracy([True] * 9 + [False])
    assert acc.accuracy == 0.9 and acc.ci_low < 0.9 < acc.ci_high <= 1 and acc.n == 10
    with pytest.raises(ValueError):
        bootstrap_accuracy([])


def test_fast_gate_generated_digits_are_recognised(model, judge):
    acc, images = generation_accuracy(model, judge, per_digit=2, scale=3.0, steps=20, seed=0)
    print(f"fast gate (a): {acc}")
    assert images.shape == (20, 1, 32, 32) and acc.accuracy >= FAST_ACCURACY


def test_fast_gate_vae_reconstructs_heldout_digits(model):
    held, _ = mnist.load_mnist_split("heldout")
    errors = reconstruction_rmse(model, held[::5], crop=28)
    print(f"fast gate (b): median {np.median(errors):.4f} over {len(errors)}")
    assert len(errors) == 200 and np.median(errors) <= FAST_VAE_MEDIAN


@pytest.mark.slow
def test_fast_gate_naive_inversion_breaks_at_high_cfg(model):
    ph = naive_phenomenon(model, per_digit=2, steps=20, scales=(1.0, 7.5))
    print(f"fast gate (c): CFG 1 {ph.spreads[1.0]}, CFG 7.5 {ph.spreads[7.5]}, ratio {ph.ratio_of_medians.median:.2f}")
    assert ph.ratio_of_medians.median >= FAST_RATIO


def test_committed_full_size_gates_pass():
    """The measurement committed with the weights (``benchmarks/mini_sd_gates.py``) meets the gates."""
    gates = json.loads(GATES.read_text())
    assert gates["written_by"] == "benchmarks/mini_sd_gates.py" and not gates["quick"]
    a, b, c = gates["a_generation_accuracy"], gates["b_vae_reconstruction_rmse"], gates["c_naive_inversion"]
    assert a["n"] == 100 and a["cfg"] == 3.0 and a["ci_low"] >= GATE_ACCURACY_CI_LOW
    assert b["n"] == 1000 and b["median"] <= GATE_VAE_MEDIAN
    assert c["steps"] == 20 and c["cfg1"]["n"] == 100 and c["ratio_of_medians"]["ci_low"] >= GATE_RATIO_CI_LOW


@pytest.mark.slow
def test_full_size_gates(model, judge):
    """Recompute the three gates at full size (minutes on one CPU thread)."""
    acc, _ = generation_accuracy(model, judge, per_digit=10, scale=3.0, steps=50, seed=0)
    held, _ = mnist.load_mnist_split("heldout")
    errors = reconstruction_rmse(model, held, crop=28)
    ph = naive_phenomenon(model, per_digit=10, steps=20)
    assert acc.ci_low >= GATE_ACCURACY_CI_LOW and np.median(errors) <= GATE_VAE_MEDIAN
    assert ph.ratio_of_medians.ci_low >= GATE_RATIO_CI_LOW


# --------------------------------------------------------------------------- the command line
def test_cli_compare_runs_mini_sd_with_heldout_real_digits(capsys):
    from cfginv_lite.cli import main

    code = main(["compare", "--model", "mini-sd", "--cfg", "1", "7.5", "--steps", "4", "--images-per-digit", "1",
                 "--real", "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    rows = [line.split() for line in out[1:]]
    assert [(r[0], r[1]) for r in rows] == [("generated", "1"), ("real", "1"), ("generated", "7.5"), ("real", "7.5")]
    with pytest.raises(SystemExit):
        main(["compare", "--model", "stable-diffusion", "--no-progress"])


# --------------------------------------------------------------------------- the calibration script
def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibration_crossings_and_refusals(tmp_path):
    cal = _script("calibrate_cfg")
    cfgs = np.array([1.0, 2.0, 4.0])
    assert cal.crossing(cfgs, np.array([1.0, 3.0, 5.0]), 2.0) == 1.5          # interpolated
    assert cal.crossing(cfgs, np.array([1.0, 3.0, 5.0]), 4.0) == 3.0
    assert cal.crossing(cfgs, np.array([1.0, 1.5, 1.9]), 2.0) is None         # never reached
    errors = np.vstack([np.full(50, 0.1), np.full(50, 0.3), np.full(50, 0.9)])
    out = cal.calibrate(errors, cfgs, n_boot=50)
    assert out["crossings"]["2x"]["cfg"] == 1.5 and out["crossings"]["8x"]["cfg"] == pytest.approx(2 + 2 * 5 / 6)
    assert out["crossings"]["2x"]["draws_not_reached"] == 0
    (tmp_path / "calibration.md").write_text("# my notes\n")
    with pytest.raises(SystemExit, match="not written by this script"):
        cal.main(["--out-dir", str(tmp_path), "--quick"])
    assert (tmp_path / "calibration.md").read_text() == "# my notes\n"
    gates = _script("mini_sd_gates")
    (tmp_path / "g.json").write_text("{}")
    with pytest.raises(SystemExit, match="not written by this script"):
        gates.main(["--out", str(tmp_path / "g.json")])
