"""The Stable Diffusion path on a tiny random-weight SD of the real architecture (CPU, offline).

Nothing here downloads weights: the tiny model is built from configs, and the loading tests
check the *errors* users get when the real weights are missing.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cfginv_lite.ddim import invert_naive, sample_ddim
from cfginv_lite.guidance import Guidance, guided_noise, make_guidance
from cfginv_lite.images import load_image
from cfginv_lite.models import load_model
from cfginv_lite.models.sd_loading import KNOWN_MODEL_IDS, _check_model_id, oom_hint
from cfginv_lite.models.stable_diffusion import (
    PREDICTION_TYPES,
    ModelNotAvailableError,
    StableDiffusionModel,
    load_stable_diffusion,
)
from cfginv_lite.models.tiny import build_tiny_stable_diffusion
from cfginv_lite.schedule import timestep_grid
from protocol_check import assert_implements_protocol

pytestmark = pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")  # diffusers' own

PROMPT = "a photo of the cat"
UNCACHED_ID = "cfginv-lite-tests/definitely-not-cached-sd"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny convolutions gain nothing from threads, and on a shared, loaded CPU a second
    thread stalls every op waiting for a descheduled partner (10x slower here); restore after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> StableDiffusionModel:
    return build_tiny_stable_diffusion(seed=0)


# Identity checks between two code paths of the same network (a batch of 4 vs two batches of 2,
# sliced vs unsliced attention, two scalings of the same latents) run the tiny SD in float64.
# In float32 the kernels behind each path round differently, by an amount that depends on the
# CPU's vector unit (AVX-512, AVX2 or the baseline x86-64 paths) and on the batch size, so a
# tolerance read off one machine (1e-5 here) is no bound. In float64 each output is within
# ~k * 2**-52 * |largest intermediate| of the exact value, with k the few hundred operations
# one element goes through and intermediates of order 10-100: ~1e-11 at most. F64_ATOL = 1e-9
# keeps a factor of ~100 over that and is still far below any real difference these tests
# must catch (a changed label or prompt moves the outputs by ~1e-1).
F64_ATOL = 1e-9


@pytest.fixture(scope="module")
def model64() -> StableDiffusionModel:
    return build_tiny_stable_diffusion(seed=0, dtype=torch.float64)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return load_image(rng.random((80, 96, 3), dtype=np.float32), size=64)


def _run(model: StableDiffusionModel, image: torch.Tensor, label: str = "source") -> tuple[torch.Tensor, torch.Tensor]:
    grid = timestep_grid(4)
    guidance = make_guidance(model, PROMPT, 3.0)
    z0 = model.encode(image)
    zT = invert_naive(model, z0, grid, guidance, label=label, progress=False)
    return zT, sample_ddim(model, zT, grid, guidance, progress=False)


# --------------------------------------------------------------------------- the whole path
def test_tiny_model_implements_protocol(model: StableDiffusionModel, image: torch.Tensor) -> None:
    assert_implements_protocol(model, image)
    assert model.name == "stable-diffusion"
    assert model.latent_shape == (4, 8, 8)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.alphas_cumprod.dtype == torch.float64 and len(model.alphas_cumprod) == 1000
    assert model.prediction_type == "epsilon"


def test_whole_path_shapes_and_dtypes(model: StableDiffusionModel, image: torch.Tensor) -> None:
    z0 = model.encode(image)
    assert z0.shape == (1, 4, 8, 8) and z0.dtype == torch.float32
    ends = {}
    for label in ("source", "destination"):
        zT, z_back = _run(model, image, label)
        assert zT.shape == z0.shape and z_back.shape == z0.shape
        assert torch.isfinite(zT).all() and torch.isfinite(z_back).all()
        ends[label] = zT
    assert not torch.equal(ends["source"], ends["destination"])  # the two conventions differ
    decoded = model.decode(z_back)
    assert decoded.shape == (1, 3, 64, 64) and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1


def test_encode_prompt_shapes(model: StableDiffusionModel) -> None:
    emb = model.encode_prompt(["", PROMPT, "word " * 200])  # the last one is truncated to 77 tokens
    assert emb.shape == (3, 77, 32) and emb.dtype == torch.float32
    assert not torch.allclose(emb[0], emb[1])
    with pytest.raises(ValueError, match="strings"):
        model.encode_prompt([PROMPT, 3])  # type: ignore[list-item]


def test_encode_is_vae_mean_times_scaling_factor(model: StableDiffusionModel, image: torch.Tensor) -> None:
    mean = model.vae.encode(image).latent_dist.mean
    assert torch.allclose(model.encode(image), mean * model.vae.config.scaling_factor)
    # The generator is only used when sampling; sample=True is seeded and differs from the mean.
    assert torch.equal(model.encode(image, generator=torch.Generator().manual_seed(1)), model.encode(image))
    s1 = model.encode(image, sample=True, generator=torch.Generator().manual_seed(1))
    s2 = model.encode(image, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and not torch.allclose(s1, model.encode(image))


def test_scaling_factor_is_read_from_vae_config(image: torch.Tensor) -> None:
    default = build_tiny_stable_diffusion(seed=0, dtype=torch.float64)
    other = build_tiny_stable_diffusion(seed=0, scaling_factor=0.5, dtype=torch.float64)
    assert other.scaling_factor == other.vae.config.scaling_factor == 0.5
    image = image.double()
    z_default, z_other = default.encode(image), other.encode(image)
    assert z_default.dtype == torch.float64
    # float64 (see F64_ATOL): the two scalings differ by a few ulp of latents of order 1
    torch.testing.assert_close(z_other, z_default * (0.5 / 0.18215), rtol=0, atol=F64_ATOL)
    # decode divides by the same factor, so both round trips give the same pixels (the decoder
    # sees inputs a few ulp apart; through its few hundred float64 operations: far below 1e-9)
    torch.testing.assert_close(default.decode(z_default), other.decode(z_other), rtol=0, atol=F64_ATOL)
    assert (default.decode(z_default) - default.decode(z_default * 1.01)).abs().max() > 1e3 * F64_ATOL


def test_bf16_model_keeps_fp32_vae(image: torch.Tensor) -> None:
    tiny = build_tiny_stable_diffusion(seed=0)
    model = StableDiffusionModel(tiny.unet, tiny.vae, tiny.text_encoder, tiny.tokenizer,
                                 tiny.scheduler_config, "cpu", torch.bfloat16, 64)
    assert model.unet.dtype == torch.bfloat16 and model.vae.dtype == torch.float32
    z = model.encode(image)
    assert z.dtype == torch.float32
    eps = model.predict_noise(z, torch.tensor([500.0]), model.encode_prompt([""]))
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


# --------------------------------------------------------------------------- predictions
def _hand_abar(model: StableDiffusionModel, label: float) -> float:
    lo = math.floor(label)
    frac = label - lo
    return float(model.alphas_cumprod[lo]) * (1 - frac) + float(model.alphas_cumprod[lo + 1]) * frac


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predict_noise_converts_to_epsilon(prediction_type: str) -> None:
    model = build_tiny_stable_diffusion(seed=3, prediction_type=prediction_type)
    assert model.prediction_type == prediction_type
    z = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([37.5, 800.0])
    emb = model.encode_prompt(["", PROMPT])
    raw = model.unet(z, labels, encoder_hidden_states=emb).sample
    eps = model.predict_noise(z, labels, emb)
    for i, label in enumerate(labels.tolist()):
        abar = _hand_abar(model, label)
        a, b = math.sqrt(abar), math.sqrt(1 - abar)
        expected = {"epsilon": raw[i], "v_prediction": a * raw[i] + b * z[i],
                    "sample": (z[i] - a * raw[i]) / b}[prediction_type]
        assert torch.allclose(eps[i], expected, atol=1e-5), (prediction_type, label)
    if prediction_type != "epsilon":
        assert not torch.allclose(eps, raw, atol=1e-3)  # a conversion really happened


def test_abar_at_fractional_labels_is_linear_interpolation_of_the_table(model: StableDiffusionModel) -> None:
    """What a v-prediction model converts with: the schedule interpolated in t (independent np.interp)."""
    labels = torch.tensor([0.0, 0.25, 37.5, 500.0, 998.9, 999.0])
    expected = np.interp(labels.double().numpy(), np.arange(1000), model.alphas_cumprod.numpy())
    got = model._abar(labels)
    assert got.dtype == torch.float64 and got.device == labels.device
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-15)
    assert float(got[1]) != float(got[0]) and float(got[0]) == float(model.alphas_cumprod[0])


def test_batched_guided_call_equals_two_calls(model64: StableDiffusionModel) -> None:
    model = model64  # float64: a batch of 4 and two of 2 round differently in float32 (F64_ATOL)
    z = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    guidance = make_guidance(model, PROMPT, 4.0)
    est = guided_noise(model, z, 250.0, 300.0, guidance)   # different labels per branch (tless)
    eps_u = model.predict_noise(z, torch.full((2,), 250.0), guidance.uncond.expand(2, -1, -1))
    eps_c = model.predict_noise(z, torch.full((2,), 300.0), guidance.cond.expand(2, -1, -1))
    assert est.guided.dtype == torch.float64
    torch.testing.assert_close(est.uncond, eps_u, atol=F64_ATOL, rtol=0)
    torch.testing.assert_close(est.cond, eps_c, atol=F64_ATOL, rtol=0)
    torch.testing.assert_close(est.guided, eps_u + 4.0 * (eps_c - eps_u), atol=10 * F64_ATOL, rtol=0)  # x4 amplifies
    assert (eps_c - eps_u).abs().max() > 1e3 * F64_ATOL   # the two branches really differ


def test_predict_noise_rejects_label_count(model: StableDiffusionModel) -> None:
    z = torch.randn(2, *model.latent_shape)
    with pytest.raises(ValueError, match="3 timestep labels for a batch of 2"):
        model.predict_noise(z, torch.tensor([1.0, 2.0, 3.0]), model.encode_prompt(["", ""]))


def test_bitwise_determinism(image: torch.Tensor) -> None:
    a, b = build_tiny_stable_diffusion(seed=7), build_tiny_stable_diffusion(seed=7)
    for module in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, module).state_dict(), getattr(b, module).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), module
    first, second = _run(a, image), _run(b, image)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(_run(a, image)[1], first[1])  # and the same model twice
    other = build_tiny_stable_diffusion(seed=8)
    assert not torch.equal(other.unet.conv_in.weight, a.unet.conv_in.weight)


# --------------------------------------------------------------------------- input validation
def test_encode_rejects_bad_images(model: StableDiffusionModel, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="batched"):
        model.encode(image[0])
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match="set_image_size"):
        model.encode(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.encode((image + 1) * 127.5)
    with pytest.raises(ValueError, match="RGBA"):
        model.encode(torch.zeros(1, 4, 64, 64))


def test_set_image_size() -> None:
    model = build_tiny_stable_diffusion(seed=0)
    model.set_image_size((64, 128))
    assert model.latent_shape == (4, 8, 16)
    assert model.encode(torch.zeros(1, 3, 64, 128)).shape == (1, 4, 8, 16)
    with pytest.raises(ValueError, match="multiple of 8"):
        model.set_image_size(100)


def test_attention_slicing_keeps_predictions(model: StableDiffusionModel) -> None:
    # float64: sliced attention (bmm) and SDPA round differently in float32, by a CPU-dependent amount
    fresh = build_tiny_stable_diffusion(seed=0, dtype=torch.float64)
    z = torch.randn(2, *fresh.latent_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    emb, labels = fresh.encode_prompt(["", PROMPT]), torch.tensor([100.0, 100.0])
    before = fresh.predict_noise(z, labels, emb)
    fresh.enable_attention_slicing(1)
    torch.testing.assert_close(fresh.predict_noise(z, labels, emb), before, atol=F64_ATOL, rtol=0)


# --------------------------------------------------------------------------- loading errors
def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="float16 on the CPU"):
        load_stable_diffusion(device="cpu", dtype=torch.float16)
    with pytest.raises(ValueError, match="float16 on the CPU"):
        load_stable_diffusion(device="cpu", dtype="fp16")


def test_cuda_requested_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_stable_diffusion(device="cuda")


def test_offline_uncached_model_gives_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_stable_diffusion(UNCACHED_ID, device="cpu", cache_dir=str(tmp_path))
    message = str(info.value)
    assert UNCACHED_ID in message
    assert f"huggingface-cli download {UNCACHED_ID}" in message and "HF_HOME" in message
    assert "Offline mode is on" in message
    assert isinstance(info.value, OSError)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    # The same through the public entry point.
    with pytest.raises(ModelNotAvailableError, match=UNCACHED_ID):
        load_model("stable-diffusion", model_id=UNCACHED_ID, device="cpu", cache_dir=str(tmp_path))


def test_missing_local_folder_gives_clear_error(tmp_path) -> None:
    with pytest.raises(ModelNotAvailableError, match="the 'scheduler' component"):
        load_stable_diffusion(tmp_path, device="cpu", local_files_only=True)  # an empty folder
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_stable_diffusion(str(tmp_path / "nope" / "sd"), device="cpu")


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory) -> tuple[Path, StableDiffusionModel]:
    """A tiny v-prediction SD written in the pipeline layout that from_pretrained reads."""
    from diffusers import DDIMScheduler

    tiny = build_tiny_stable_diffusion(seed=5, prediction_type="v_prediction")
    folder = tmp_path_factory.mktemp("tiny-sd")
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        getattr(tiny, name).save_pretrained(folder / name)
    DDIMScheduler.from_config(tiny.scheduler_config).save_pretrained(folder / "scheduler")
    return folder, tiny


def test_load_from_local_folder_round_trip(saved_folder) -> None:
    folder, tiny = saved_folder
    loaded = load_stable_diffusion(folder, device="cpu", image_size=64)
    assert loaded.prediction_type == "v_prediction" and loaded.latent_shape == (4, 8, 8)
    assert loaded.scaling_factor == tiny.scaling_factor and loaded.dtype == torch.float32
    emb = loaded.encode_prompt(["", PROMPT])
    assert torch.equal(emb, tiny.encode_prompt(["", PROMPT]))
    z, labels = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([5.0, 900.0])
    assert torch.equal(loaded.predict_noise(z, labels, emb), tiny.predict_noise(z, labels, emb))


@pytest.fixture(scope="module")
def fp16_variant_folder(saved_folder, tmp_path_factory) -> tuple[Path, StableDiffusionModel]:
    """``saved_folder`` plus an ``fp16`` variant of other weights (seed 6), to tell the files apart."""
    other = build_tiny_stable_diffusion(seed=6, prediction_type="v_prediction")
    folder = shutil.copytree(saved_folder[0], tmp_path_factory.mktemp("tiny-sd-fp16") / "sd")
    for name in ("unet", "vae", "text_encoder"):
        getattr(other, name).to(torch.float16).save_pretrained(folder / name, variant="fp16")
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    return folder, other


def _same_weights(module: torch.nn.Module, reference: torch.nn.Module, half: bool) -> bool:
    ref = {k: (v.half().float() if half else v) for k, v in reference.state_dict().items()}
    got = module.state_dict()
    return all(torch.equal(got[k].float(), ref[k].float()) for k in ref if ref[k].is_floating_point())


def test_auto_variant_is_fp16_only_for_fp16_on_cuda() -> None:
    from cfginv_lite.models.sd_loading import _auto_variant

    assert _auto_variant(torch.device("cuda"), torch.float16) == "fp16"
    assert _auto_variant(torch.device("cuda"), torch.float32) is None
    assert _auto_variant(torch.device("cuda"), torch.bfloat16) is None
    assert _auto_variant(torch.device("cpu"), torch.float32) is None


def test_fp16_variant_is_read_when_present(fp16_variant_folder, saved_folder, monkeypatch: pytest.MonkeyPatch) -> None:
    import cfginv_lite.models.sd_loading as sd

    folder, other = fp16_variant_folder
    plain = saved_folder[1]
    # explicit: the fp16 files, upcast into the float32 model (the VAE always stays float32)
    loaded = load_stable_diffusion(folder, device="cpu", image_size=64, variant="fp16")
    assert loaded.vae.dtype == torch.float32 and loaded.dtype == torch.float32
    for name in ("unet", "vae", "text_encoder"):
        assert _same_weights(getattr(loaded, name), getattr(other, name), half=True), name
    # "auto" on the CPU (fp32): the plain files, although a variant exists
    loaded = load_stable_diffusion(folder, device="cpu", image_size=64)
    assert all(_same_weights(getattr(loaded, n), getattr(plain, n), half=False) for n in ("unet", "vae"))
    # "auto" where it asks for fp16 (fp16 on CUDA; simulated here): the variant files
    monkeypatch.setattr(sd, "_auto_variant", lambda device, dtype: "fp16")
    loaded = load_stable_diffusion(folder, device="cpu", image_size=64)
    for name in ("unet", "vae", "text_encoder"):
        assert _same_weights(getattr(loaded, name), getattr(other, name), half=True), name
    # variant=None: always the plain files
    loaded = load_stable_diffusion(folder, device="cpu", image_size=64, variant=None)
    assert _same_weights(loaded.unet, plain.unet, half=False)


def test_fp16_variant_falls_back_to_plain_files(saved_folder, monkeypatch: pytest.MonkeyPatch) -> None:
    import cfginv_lite.models.sd_loading as sd

    folder, plain = saved_folder  # no fp16 files
    monkeypatch.setattr(sd, "_auto_variant", lambda device, dtype: "fp16")
    loaded = load_stable_diffusion(folder, device="cpu", image_size=64)  # "auto": falls back
    for name in ("unet", "vae", "text_encoder"):
        assert _same_weights(getattr(loaded, name), getattr(plain, name), half=False), name
    with pytest.raises(ModelNotAvailableError, match="the 'text_encoder' component"):
        load_stable_diffusion(folder, device="cpu", image_size=64, variant="fp16")  # explicit: strict


@pytest.mark.parametrize("component", ["scheduler", "tokenizer", "text_encoder", "vae", "unet"])
def test_incomplete_local_folder(saved_folder, component: str, tmp_path) -> None:
    folder = shutil.copytree(saved_folder[0], tmp_path / "sd")
    shutil.rmtree(folder / component)
    with pytest.raises(ModelNotAvailableError, match=f"the '{component}' component"):
        load_stable_diffusion(folder, device="cpu", image_size=64)


@pytest.mark.parametrize("bad_id", ["not a valid//id", "a--b/c", ""])
def test_invalid_model_id(bad_id: str) -> None:
    with pytest.raises(ValueError, match="model id|model_id") as info:
        load_stable_diffusion(bad_id, device="cpu")
    assert not isinstance(info.value, ModelNotAvailableError)


def test_oom_hint_suggests_remedies(model: StableDiffusionModel, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError, match="set_attention_slice"):
        with oom_hint("a test"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(model, "unet", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        model.predict_noise(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]), torch.zeros(1, 77, 32))
    assert "Tried to allocate 9.00 GiB" in str(info.value) and "smaller image" in str(info.value)


def test_known_model_ids_are_valid_hub_ids_named_in_the_errors(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for model_id, (size, prediction) in KNOWN_MODEL_IDS.items():
        assert _check_model_id(model_id) == (model_id, False)  # a hub id, not a local folder
        assert size % 8 == 0 and prediction in PREDICTION_TYPES
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_stable_diffusion(UNCACHED_ID, device="cpu", cache_dir=str(tmp_path))
    assert all(model_id in str(info.value) for model_id in KNOWN_MODEL_IDS)  # what to try instead


def test_import_does_not_import_transformers() -> None:
    code = ("import sys, cfginv_lite, cfginv_lite.models.stable_diffusion, cfginv_lite.images; "
            "sys.exit(1 if 'transformers' in sys.modules else 0)")
    # timeout: a hang guard for one import (seconds on a loaded machine), not a measurement
    assert subprocess.run([sys.executable, "-c", code], timeout=900).returncode == 0


def test_guidance_with_raw_embeddings(model: StableDiffusionModel, image: torch.Tensor) -> None:
    """Benchmarks bypass the text encoder; a model without one still inverts and says why it can't encode."""
    bare = StableDiffusionModel(model.unet, model.vae, None, None, model.scheduler_config, "cpu", torch.float32, 64)
    emb = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(0))
    guidance = Guidance(cond=emb[:1], uncond=emb[1:], scale=2.0)
    zT = invert_naive(bare, bare.encode(image), timestep_grid(2), guidance, progress=False)
    assert zT.shape == (1, 4, 8, 8) and torch.isfinite(zT).all()
    with pytest.raises(ValueError, match="without a text encoder"):
        bare.encode_prompt([PROMPT])


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def test_empty_batch_is_rejected_by_stable_diffusion():
    from cfginv_lite.models.tiny import build_tiny_stable_diffusion

    model = build_tiny_stable_diffusion(image_size=64)
    with pytest.raises(ValueError, match="empty"):
        model.encode(torch.zeros(0, 3, 64, 64))
    model.set_image_size(np.int64(64))  # numpy integers are integers here too
    assert model.latent_shape == (4, 8, 8) and type(model.image_size[0]) is int


# --------------------------------------------------------------------------- bad input (issue 20; was tests/test_bad_input.py)
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
