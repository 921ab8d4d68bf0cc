"""The rectified-flow twin (load_model("digits-flow")): shipped weights, gates, trainer, benchmark."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.data import HOLDOUT_SEED, train_digit_classifier
from cfginv_lite.flow_quality import flow_generation_accuracy
from cfginv_lite.models.flow_digits import FLOW_WEIGHTS_DIR, FlowDigitsModel
from cfginv_lite.models.train_flow_digits import main as train_main, train_flow

ROOT = Path(__file__).resolve().parents[1]
GATES = ROOT / "docs" / "flow_gates.json"


def test_the_twin_is_a_velocity_model_trained_without_the_heldout_digits() -> None:
    info = json.loads((FLOW_WEIGHTS_DIR / "digits.json").read_text())
    assert info["parameterisation"] == "velocity" and info["holdout_per_digit"] == 50
    assert info["holdout_seed"] == HOLDOUT_SEED and info["train_images"] == 1797 - 500
    model = cl.load_model("digits-flow")
    assert isinstance(model, FlowDigitsModel) and "digits-flow" in cl.MODEL_NAMES
    teacher = cl.load_model("digits-split")          # warm-started from it, but trained on: not a copy
    assert not torch.equal(next(model.unet.parameters()), next(teacher.unet.parameters()))
    with pytest.raises(TypeError, match="velocity"):
        model.predict_noise(torch.zeros(1, 1, 8, 8), torch.zeros(1), model.encode_prompt([""]))
    with pytest.raises(ValueError, match="weights_dir"):
        cl.load_model("digits-flow", model_id="x")


def test_committed_gates_pass_real_thresholds() -> None:
    gates = json.loads(GATES.read_text())
    assert gates["written_by"] == "benchmarks/flow_gates.py" and not gates["quick"]
    a = gates["a_generation_accuracy"]
    assert a["n"] == 100 and a["ci_low"] >= 0.80, a            # generated digits are recognised
    assert a["accuracy"] >= gates["c_teacher_generation_accuracy"]["accuracy"] - 0.15   # near its teacher
    d = gates["d_heldout_flow_matching_loss"]
    assert d["images"] == 500 and d["twin"] < 0.5 * d["start"], d    # training made it a velocity model
    b = gates["b_reversed_euler"]
    assert b["cfg1"]["n"] == 100 and b["ratio_of_medians"]["ci_low"] > 1.0   # the phenomenon exists on the twin


def test_live_generation_gate_small() -> None:
    """20 fresh digits (2 per class), recognised at least 12 of 20 times (the full gate: docs/flow_gates.json)."""
    acc, images = flow_generation_accuracy(cl.load_model("digits-flow"), train_digit_classifier(heldout_per_digit=50),
                                           per_digit=2, steps=10, seed=1)
    assert images.shape == (20, 1, 8, 8) and acc.accuracy >= 0.6, acc


def test_trainer_is_seeded_and_refuses_the_shipped_folder(tmp_path) -> None:
    a, info = train_flow(steps=2, batch=8, progress=False)
    b, _ = train_flow(steps=2, batch=8, progress=False)
    assert info["init"] == "split" and info["train_images"] == 1297
    assert all(torch.equal(p, q) for p, q in zip(a.unet.parameters(), b.unet.parameters()))
    with pytest.raises(SystemExit):
        train_main(["--steps", "1", "--out", str(FLOW_WEIGHTS_DIR)])     # shipped weights need --force
    with pytest.raises(ValueError, match="init"):
        train_flow(steps=1, init="mini-sd", progress=False)
    assert train_main(["--steps", "1", "--batch", "4", "--out", str(tmp_path / "w"), "--no-progress"]) == 0
    assert cl.load_model("digits-flow", weights_dir=tmp_path / "w").name == "digits-flow"


@pytest.mark.slow
def test_flow_benchmark_quick_writes_resumes_and_protects(tmp_path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "flow_benchmark.py"), "--quick", "--out-dir", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    state = json.loads((tmp_path / "flow_benchmark.json").read_text())
    assert set(state["cells"]) == {"euler", "uni-inv", "euler-nudge-1.15"}
    cell = state["cells"]["euler"]["7.5"]
    assert cell["nfe"] == 2 * 2 and cell["n"] == 10 and np.isfinite(cell["median"])
    assert state["cells"]["uni-inv"]["1"]["nfe"] == 2 * 3
    assert "| euler | 4 |" in (tmp_path / "flow_benchmark.md").read_text()
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and "CFG" not in again.stdout          # nothing left to run
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "flow_benchmark.md").write_text("mine\n")
    refused = subprocess.run([*cmd[:-1], str(foreign)], capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode != 0 and (foreign / "flow_benchmark.md").read_text() == "mine\n"


def test_committed_flow_edit_table_supports_the_notebook_sentence() -> None:
    """05b says: FlowEdit keeps more style than inversion-based editing at every target CFG (intervals apart), success >= 0.93."""
    state = json.loads((ROOT / "docs" / "flow_edit.json").read_text())
    assert state["written_by"] == "benchmarks/flow_edit.py" and not state["quick"] and state["n"] == 100
    inv = state["cells"]["inversion-based (reversed Euler + Euler)"]
    for cfg in ("1", "3", "7.5"):
        for seed in (0, 1, 2):
            fe = state["cells"][f"flowedit (seed {seed})"][cfg]
            assert fe["style_ci"][1] < inv[cfg]["style_ci"][0], (cfg, seed)
            assert fe["success"] >= 0.93 and inv[cfg]["success"] >= 0.93


@pytest.mark.slow
def test_flow_edit_benchmark_quick(tmp_path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "flow_edit.py"), "--quick", "--out-dir",
                          str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    state = json.loads((tmp_path / "flow_edit.json").read_text())
    assert set(state["cells"]) == {"flowedit (seed 0)", "flowedit (seed 1)", "flowedit (seed 2)",
                                   "inversion-based (reversed Euler + Euler)"}
    assert state["cells"]["flowedit (seed 0)"]["7.5"]["nfe"] == 2 * 2 * (3 - 1)
    assert state["cells"]["inversion-based (reversed Euler + Euler)"]["1"]["nfe"] == 4 * 3
    assert set(state["seed_spread"]) == {"1", "3", "7.5"}
