"""Shared fixtures: an analytic model with a known exact inverse, and the shipped digits model."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from cfginv_lite.models import digits as digits_module
from cfginv_lite.models import train_digits
from cfginv_lite.schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config

# Under pytest-xdist (the README's test command runs `-n auto`) each worker runs its own tests
# and notebook kernels (which inherit this environment): one thread per worker keeps N workers
# on N cores instead of N x N threads fighting for them. An explicit OMP_NUM_THREADS wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))



class AnalyticModel:
    """A protocol-conforming 'network' with a closed-form noise prediction.

    ``eps(z, t, c) = scale(t) * z + c`` with ``c`` the (mean) embedding broadcast over the
    latent, so guided noise is affine in ``z`` and every quantity is computable exactly.
    """

    name = "analytic"

    def __init__(self, shape: tuple[int, int, int] = (1, 4, 4), slope: float = 0.3) -> None:
        self.latent_shape = shape
        self.scheduler_config = dict(SD1_SCHEDULER_CONFIG)
        self.alphas_cumprod = alphas_cumprod_from_config(self.scheduler_config)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.slope = slope
        self.calls: list[int] = []

    def encode(self, images, *, generator=None):
        return images

    def decode(self, latents):
        return latents

    def encode_prompt(self, prompts):
        vals = [float(len(p)) / 10 for p in prompts]
        return torch.tensor(vals).view(-1, 1, 1).expand(-1, 2, 3).clone()

    def predict_noise(self, latents, labels, embeddings):
        self.calls.append(latents.shape[0])
        s = self.slope * (labels.view(-1, 1, 1, 1) / 1000.0)
        c = embeddings.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return s * latents + c


@pytest.fixture
def analytic_model() -> AnalyticModel:
    return AnalyticModel()


@pytest.fixture(scope="session")
def digits_model():
    from cfginv_lite import load_model

    return load_model("digits")


@pytest.fixture(scope="session")
def digits_model_f64(digits_model):
    """The shipped digits model run in float64 (its own weights, cast; embeddings and outputs float64).

    For identity checks between two code paths of the network (bmm vs SDPA attention, a batch vs
    its subsets): in float32 their difference is kernel rounding that depends on the CPU's vector
    unit (AVX-512, AVX2, the baseline x86-64 paths) and on the batch size, so no tolerance read
    off one machine bounds it. In float64 one evaluation is within ~k * 2**-52 * |largest
    intermediate| of the exact value (k: the few hundred operations one output goes through;
    intermediates of order 10): ~1e-12, and a few guided steps amplify that by less than 10 each.
    """
    import copy

    model = copy.copy(digits_model)
    model.unet = copy.deepcopy(digits_model.unet).double()
    model.text_encoder = copy.deepcopy(digits_model.text_encoder).double()
    model.dtype = torch.float64
    return model


@pytest.fixture
def shipped_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped weights that the package believes is its weights folder."""
    copy = tmp_path / "package_weights"
    shutil.copytree(digits_module.WEIGHTS_DIR, copy)
    monkeypatch.setattr(digits_module, "WEIGHTS_DIR", copy)
    monkeypatch.setattr(train_digits, "WEIGHTS_DIR", copy)
    return copy
