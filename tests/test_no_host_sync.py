"""No host synchronisation inside the solver loops, checked without a GPU.

On the ``meta`` device a tensor has a shape but no data, so anything that would read a value
on the host inside the loop (``bool(t)``, ``t.item()``, ``t.tolist()``, ``.cpu()``, a Python
``if`` on a tensor) raises. A solver that runs to the end on meta tensors decides everything
on the device: on a GPU its loop never waits for the queue. The argument checks before the
loop and the finite-latent report after it are the only reads (one each per call), and are
stubbed out here.
"""
from __future__ import annotations

import pytest
import torch

import importlib
import inspect
import pkgutil

import cfginv_lite
from cfginv_lite import compensate, ddim, exact, fixed_point, validation
from cfginv_lite.guidance import Guidance
from cfginv_lite.schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config, timestep_grid


class MetaModel:
    name, latent_shape, dtype = "meta", (4, 8, 8), torch.float32
    device = torch.device("meta")
    alphas_cumprod = alphas_cumprod_from_config(SD1_SCHEDULER_CONFIG)

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_noise(self, latents, labels, embeddings):
        assert labels.device.type == "meta"  # labels are built on the latents' device
        self.calls.append(latents.shape[0])
        return latents * 0.1 + labels.view(-1, 1, 1, 1) * 1e-3 + embeddings.mean() * 0


@pytest.fixture
def no_checks(monkeypatch):
    for module in (compensate, ddim, exact, fixed_point):
        monkeypatch.setattr(module, "check_latents", lambda model, latents: latents)
    monkeypatch.setattr(validation.FiniteGuard, "raise_if_bad", lambda self, *args: None)


SOLVER_CASES = [
    (ddim.invert_naive, {}),
    (ddim.sample_ddim, {}),
    (compensate.invert_original, dict(refine_skip=0.0, divergence_factor=2.0)),
    (compensate.invert_original, dict(refine_skip=0.0, lr_decay_mode="intended", tless_factor=None)),
    (fixed_point.invert_fixed_point, dict(tol=1e-3, average_last=2)),
    (fixed_point.invert_fixed_point, dict(tol=1e-3, window=3, budget=5)),
    (fixed_point.invert_fixed_point, dict(tol=1e-3, window=3, warm_start=True,
                                          budget=fixed_point.budget_on_levels(3, (0, 1000), 1))),
    (exact.invert_edict, {}),
    (exact.sample_edict, {}),
    (exact.invert_bdia, dict(gamma=0.5)),
    (exact.sample_bdia, {}),
]
#: Solvers this test does not run on meta tensors, and why (each is checked to exist, so the list cannot go stale).
NOT_ON_META = {
    "invert_null_text": "Adam optimisation of per-image embeddings, on purpose a host loop (the baseline as published)",
    "sample_lms": "diffusers' LMSDiscreteScheduler keeps its sigmas and multistep history on the host",
    "invert_negative_prompt": "invert_naive at CFG 1 with the negative prompt (covered through invert_naive)",
    "invert_conditional": "the null-text pivot: one conditional branch per step, like invert_naive",
}


def test_every_solver_is_covered():
    """Every public ``invert_*``/``sample_*`` function of the package is run below or exempt with a reason."""
    modules = [importlib.import_module(f"cfginv_lite.{m.name}") for m in pkgutil.iter_modules(cfginv_lite.__path__)
               if m.name != "__main__"]
    found = {name for module in modules for name, fn in vars(module).items()
             if inspect.isfunction(fn) and fn.__module__ == module.__name__ and name.startswith(("invert_", "sample_"))}
    from cfginv_lite.flow_fixed_point import FLOW_METHODS   # run on meta tensors in tests/test_flow.py

    covered = {fn.__name__ for fn, _ in SOLVER_CASES} | {"edit"}
    covered |= {fn.__name__ for entry in FLOW_METHODS.values() for fn in (entry.invert, entry.sample)}
    assert found - covered == set(NOT_ON_META), sorted(found - covered)


@pytest.mark.parametrize("solver, options", SOLVER_CASES)
def test_solver_loops_never_read_a_value_on_the_host(no_checks, solver, options):
    model = MetaModel()
    z = torch.empty(3, *model.latent_shape, device="meta")
    emb = torch.empty(1, 77, 8, device="meta")
    g = Guidance(cond=emb, uncond=emb, scale=3.0)
    rows: list[dict] = []
    out = solver(model, z, timestep_grid(4), g, callback=rows.append, progress=False, **options)
    out = out[0] if isinstance(out, tuple) else out     # the exact inversions return a pair
    assert out.device.type == "meta" and out.shape == z.shape
    assert len(rows) == 4 and set(model.calls) == {6}  # constant batch shape: 2 branches x 3 images
    for r in rows:  # per-image values stay on the device
        assert all(v.device.type == "meta" for v in r.values() if isinstance(v, torch.Tensor))


class _StubUNet:
    """Just the attention-processor API :func:`cfginv_lite.editing.attention_control` uses."""

    def __init__(self) -> None:
        self.attn_processors = {"mid.attn2.processor": object()}

    def set_attn_processor(self, processors) -> None:
        self.attn_processors = dict(processors)


def test_edit_loop_never_reads_a_value_on_the_host(no_checks, monkeypatch):
    from cfginv_lite import editing

    monkeypatch.setattr(editing, "check_latents", lambda model, latents: latents)
    model = MetaModel()
    model.unet = _StubUNet()
    z = torch.empty(3, *model.latent_shape, device="meta")
    emb = torch.empty(1, 77, 8, device="meta")
    g = Guidance(cond=emb, uncond=emb, scale=3.0)
    rows: list[dict] = []
    out = editing.edit(model, z, timestep_grid(4), g, torch.empty(3, 77, 8, device="meta"), tau=0.5,
                       callback=rows.append, progress=False)
    assert out.edited.device.type == "meta" and out.reconstructed.shape == z.shape
    assert len(rows) == 4 and set(model.calls) == {12}  # one call per step: 2 branches x 2 rows x 3 images
    assert [r["replaced"] for r in rows] == [True, True, False, False]


def test_word_swap_processor_never_reads_a_value_on_the_host():
    from diffusers.models.attention_processor import Attention, AttnProcessor

    from cfginv_lite.editing import SwapState, WordSwapAttention

    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4).to("meta")
    state = SwapState(batch=3, active=True, tokens=torch.ones(5, dtype=torch.bool, device="meta"))
    out = WordSwapAttention(state, AttnProcessor())(attn, torch.empty(12, 16, 8, device="meta"),
                                                    torch.empty(12, 5, 6, device="meta"))
    assert out.device.type == "meta" and out.shape == (12, 16, 8) and state.calls == 1
