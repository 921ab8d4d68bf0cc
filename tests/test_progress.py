"""Long notebook cells show a progress bar (tqdm.auto): nothing sits still for a minute.

Notebook 01's three long cells (generation and inversion of 100 digits over 50 steps, their
evaluation, the sampling trajectory and the noise at every level) each took 55-80 s on one CPU
with no visible sign of life. Static checks on the notebook's source, plus the package's bars.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import torch

import cfginv_lite as cl
from cfginv_lite import diagnostics as dg

ROOT = Path(__file__).resolve().parents[1]
# calls that run the network over a whole set of digits, and so must show a bar in a notebook
LONG_CALLS = {"digit_sets", "evaluate", "invert_naive", "sampling_trajectory", "noise_change_between_levels"}


def _calls(source: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in LONG_CALLS:
                yield name, {k.arg: k.value for k in node.keywords}


def test_notebook_01_long_cells_show_progress():
    nb = json.loads((ROOT / "notebooks" / "01_ddim_inversion.ipynb").read_text(encoding="utf-8"))
    checked = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if "tqdm(" in source:  # the cell shows its own bar over its loop
            continue
        for name, kwargs in _calls(source):
            progress = kwargs.get("progress")
            assert isinstance(progress, ast.Constant) and progress.value is True, \
                f"notebook 01 calls {name}(...) without progress=True:\n{source}"
            checked.append(name)
    assert {"digit_sets", "evaluate", "sampling_trajectory", "noise_change_between_levels"} <= set(checked)
    # the hand-written inversion loop has its own bar too
    loop = [c for c in nb["cells"] if "def naive_inversion" in "".join(c["source"])]
    assert len(loop) == 1 and "tqdm(" in "".join(loop[0]["source"])


def test_diagnostics_show_a_bar_only_when_asked(analytic_model, capsys):
    z = torch.randn(2, *analytic_model.latent_shape, generator=torch.Generator().manual_seed(0))
    g = cl.make_guidance(analytic_model, ["a", "bb"], 3.0)
    grid = cl.timestep_grid(4)
    quiet = dg.sampling_trajectory(analytic_model, z, grid, g)
    dg.noise_change_between_levels(analytic_model, quiet, grid, g)
    assert capsys.readouterr().err == ""
    traj = dg.sampling_trajectory(analytic_model, z, grid, g, progress=True)
    change = dg.noise_change_between_levels(analytic_model, traj, grid, g, progress=True)
    err = capsys.readouterr().err
    assert "DDIM sampling" in err and "noise at every level" in err
    assert torch.equal(traj, quiet) and change.shape == (4, 2)
