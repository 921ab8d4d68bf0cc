"""Issue 19's redesign changed no result: the solvers against a frozen copy of themselves.

``tests/frozen19/`` holds ``ddim.py``, ``compensate.py``, ``rootfind.py`` and ``methods.py`` as
they were at commit fac9175, before the redesign folded ``invert_fixed_point``,
``invert_anderson`` and ``invert_focused`` into one ``invert_fixed_point(window=, budget=)``,
moved guidance, validation and the records into their own modules and made every callback
record a typed ``StepInfo``. Both run here, on this CPU, on the shipped digits model with the
same batch, so every latent and every per-step record must agree bit for bit.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "frozen19"))
import compensate19  # noqa: E402
import ddim19  # noqa: E402
import methods19  # noqa: E402
import rootfind19  # noqa: E402

import cfginv_lite as cl  # noqa: E402
from cfginv_lite.data import digit_prompt, real_digits  # noqa: E402
from cfginv_lite.fixed_point import HARD_LEVELS  # noqa: E402

#: An oracle comparison of every solver configuration (minutes on one core): part of the full run, not the fast one.
pytestmark = pytest.mark.slow

LABELS = [3, 1, 7, 0]
STEPS = 8
#: (frozen solver, its options) -> (new solver, its options): every configuration the redesign renamed.
CASES = [
    ((ddim19.invert_naive, {}), (cl.invert_naive, {})),
    ((ddim19.invert_naive, dict(label="destination")), (cl.invert_naive, dict(label="destination"))),
    ((ddim19.sample_ddim, {}), (cl.sample_ddim, {})),
    ((compensate19.invert_original, {}), (cl.invert_original, {})),
    ((compensate19.invert_original, dict(refine_iterations=5)), (cl.invert_original, dict(refine_iterations=5))),
    ((compensate19.invert_original, dict(refine_skip=0.0, refine_iterations=4, error_threshold=900.0)),
     (cl.invert_original, dict(refine_skip=0.0, refine_iterations=4, error_threshold=900.0))),
    ((compensate19.invert_original, dict(refine_skip=0.0, lr_decay_mode="intended", tless_factor=None)),
     (cl.invert_original, dict(refine_skip=0.0, lr_decay_mode="intended", tless_factor=None))),
    ((compensate19.invert_original, dict(refine_skip=0.0, refine_iterations=6, divergence_factor=1.05,
                                         integer_labels=True)),
     (cl.invert_original, dict(refine_skip=0.0, refine_iterations=6, divergence_factor=1.05, integer_labels=True))),
    ((compensate19.invert_fixed_point, {}), (cl.invert_fixed_point, {})),
    ((compensate19.invert_fixed_point, dict(damping=0.5, average_last=3, skip=0.5, init_label="source")),
     (cl.invert_fixed_point, dict(damping=0.5, average_last=3, budget=cl.budget_after_fraction(10, 0.5),
                                  init_label="source"))),
    ((compensate19.invert_fixed_point, dict(iterations=6, tol=0.02)), (cl.invert_fixed_point, dict(budget=6, tol=0.02))),
    ((compensate19.invert_fixed_point, dict(iterations=6, divergence_factor=1.05)),
     (cl.invert_fixed_point, dict(budget=6, divergence_factor=1.05))),
    ((compensate19.invert_anderson, {}), (cl.invert_fixed_point, dict(budget=5, window=3))),
    ((compensate19.invert_anderson, dict(iterations=6, tol=0.02, average_last=2, window=2)),
     (cl.invert_fixed_point, dict(budget=6, tol=0.02, average_last=2, window=2))),
    ((compensate19.invert_anderson, dict(iterations=6, divergence_factor=1.05, damping=0.7, init_label="source")),
     (cl.invert_fixed_point, dict(budget=6, window=3, divergence_factor=1.05, damping=0.7, init_label="source"))),
    ((rootfind19.invert_focused, {}), (cl.invert_fixed_point, dict(budget=cl.budget_on_levels(4, HARD_LEVELS, 2),
                                                                   window=3))),
    ((rootfind19.invert_focused, dict(iterations=3, levels=(0, 1000), warm_start=True)),
     (cl.invert_fixed_point, dict(budget=cl.budget_on_levels(3, (0, 1000), 2), window=3, warm_start=True))),
    ((rootfind19.invert_focused, dict(iterations=4, levels=(700, 950), other_iterations=0, tol=1e-3)),
     (cl.invert_fixed_point, dict(budget=cl.budget_on_levels(4, (700, 950), 0), window=3, tol=1e-3))),
]
#: Registry entries whose solver the redesign touched (the baselines and exact pairs it did not).
SOLVER_METHODS = ["naive", "naive-destination", "original", "original-showcase", "original-no-tless", "fixed-point",
                  "fixed-point-damped", "anderson", "focused"]


@pytest.fixture(scope="module")
def setup(digits_model):
    model = digits_model
    x = model.encode(real_digits(LABELS, seed=0))
    prompts = [digit_prompt(d) for d in LABELS]
    return model, x, cl.make_guidance(model, prompts, 6.0), ddim19.make_guidance(model, prompts, 6.0), cl.timestep_grid(STEPS)


def _same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        assert a.shape == b.shape and torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0)), where
    else:
        assert a == b, where


def _same_records(new: list, old: list) -> None:
    assert len(new) == len(old) > 0
    for n, o in zip(new, old):
        assert set(n) == set(o), (sorted(n), sorted(o))
        for key in o:
            if key == "nfe":   # one type now: (B,) long per image; before, the plain loops reported an int
                assert n["nfe"].dtype == torch.long and n["nfe"].shape == (n["latent"].shape[0],)
                _same(n["nfe"], torch.as_tensor(o["nfe"]).expand_as(n["nfe"]), f"step {o['step']}: nfe")
            else:
                _same(n[key], o[key], f"step {o['step']}: {key}")


@pytest.mark.parametrize("case", range(len(CASES)))
def test_solver_bit_identical_to_its_frozen_self(setup, case):
    model, x, g, g19, grid = setup
    (old_fn, old_opts), (new_fn, new_opts) = CASES[case]
    old_rows, new_rows = [], []
    start = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) if old_fn is ddim19.sample_ddim else x
    old = old_fn(model, start, grid, g19, callback=old_rows.append, progress=False, **old_opts)
    new = new_fn(model, start, grid, g, callback=new_rows.append, progress=False, **new_opts)
    assert torch.equal(new, old), float((new - old).abs().max())
    _same_records(new_rows, old_rows)


def test_cases_exercise_early_stops_and_divergence(setup):
    """The cases above are only a check if they reach the bookkeeping's branches: early stops and
    divergence that split the batch, skipped steps, warm starts (its first iterate differs)."""
    model, x, g, _, grid = setup
    seen = set()
    for _, (fn, opts) in CASES[3:]:
        rows = []
        fn(model, x, grid, g, callback=rows.append, progress=False, **opts)
        for r in rows:
            seen.update(int(s) for s in r["stopped"].unique())
    assert {int(cl.Stop.MAX_ITER), int(cl.Stop.THRESHOLD), int(cl.Stop.DIVERGED), int(cl.Stop.SKIPPED)} <= seen


@pytest.mark.parametrize("name", SOLVER_METHODS)
def test_registry_entries_bit_identical(setup, name):
    model, x, g, g19, grid = setup
    new = cl.invert(name, model, x, grid, g)
    old = methods19.run_method(name, model, x, grid, g19)
    assert torch.equal(new.latents, old.latents) and new.nfe == old.nfe and new.nfe_backward == old.nfe_backward
