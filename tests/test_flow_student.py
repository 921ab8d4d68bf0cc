"""The guidance-distilled student (load_model("digits-flow-student")): gates, NFE, no unconditional branch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cfginv_lite as cl
from cfginv_lite.data import digit_prompt, split_digit_set
from cfginv_lite.flow import flow_grid, guided_velocity, invert_euler
from cfginv_lite.flow_student import ignores_unconditional
from cfginv_lite.guidance import Guidance, make_guidance
from cfginv_lite.methods import NFECounter
from cfginv_lite.models.flow_student import STUDENT_WEIGHTS_DIR, FlowStudentModel
from cfginv_lite.models.train_flow_student import distil_student, main as distil_main

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "flow_student.json"


@pytest.fixture(scope="module")
def student() -> FlowStudentModel:
    return cl.load_model("digits-flow-student")


def test_the_student_is_distilled_from_the_flow_twin_without_the_heldout_digits(student) -> None:
    info = json.loads((STUDENT_WEIGHTS_DIR / "digits.json").read_text())
    assert info["guidance_embedded"] is True and info["teacher"] == "digits-flow"
    assert info["holdout_per_digit"] == 50 and info["train_images"] == 1797 - 500
    assert student.guidance_embedded and "digits-flow-student" in cl.MODEL_NAMES
    teacher = cl.load_model("digits-flow")    # started from it, but distilled: not a copy
    assert not torch.equal(student.unet.conv_in.weight, teacher.unet.conv_in.weight)
    with pytest.raises(ValueError, match="weights_dir"):
        cl.load_model("digits-flow-student", model_id="x")


def test_committed_gates_pass_real_thresholds() -> None:
    r = json.loads(REPORT.read_text())
    assert r["written_by"] == "benchmarks/flow_student.py" and not r["quick"]
    a = r["a_velocity_match"]
    assert a["n"] == 500
    for w in ("3", "7.5"):   # the student reproduces the guided velocity better than its untrained start
        assert a["scales"][w]["paired_ratio"]["ci_high"] < 0.7, a["scales"][w]
    assert a["scales"]["1"]["student"]["median"] < 0.25, a["scales"]["1"]   # and stays close at w = 1
    b = r["b_generation_accuracy"]
    assert b["n"] == 100 and b["ci_low"] >= 0.8, b      # its samples at w = 3 are recognised digits
    c = r["c_round_trips"]
    assert c["n"] == 100 and c["nfe"] == {"teacher": 2 * c["steps"], "student": c["steps"]}
    assert r["d_uncond_change"] == 0.0


def test_student_inversion_counts_one_nfe_per_image_and_step(student) -> None:
    images, labels = split_digit_set("heldout", 1)
    g = make_guidance(student, [digit_prompt(d) for d in labels], 7.5)
    count = NFECounter()
    invert_euler(student, images, flow_grid(4), g, progress=False, callback=count)
    assert count.nfe == 4


def test_guided_velocity_ignores_the_unconditional_embedding(student) -> None:
    images, labels = split_digit_set("heldout", 2)
    assert ignores_unconditional(student, images, labels) == 0.0
    g = make_guidance(student, [digit_prompt(d) for d in labels], 3.0)
    neg = make_guidance(student, [digit_prompt(d) for d in labels], 3.0, negative_prompts="the digit nine")
    assert torch.equal(guided_velocity(student, images, 0.3, g), guided_velocity(student, images, 0.3, neg))
    # but the embedded scale does change the velocity (the input is used)
    g7 = Guidance(cond=g.cond, uncond=g.uncond, scale=7.5)
    assert not torch.allclose(guided_velocity(student, images, 0.3, g), guided_velocity(student, images, 0.3, g7))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_bad_scales_give_a_clear_error(student, bad) -> None:
    z, t = torch.zeros(2, 1, 8, 8), torch.full((2,), 0.5)
    emb = student.encode_prompt(["one", "two"])
    with pytest.raises(ValueError, match="finite"):
        student.predict_velocity(z, t, emb, torch.tensor([1.0, bad]))
    with pytest.raises(ValueError, match="scale"):
        student.predict_velocity(z, t, emb)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        student.predict_velocity(z, t, emb, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="guidance scale"):
        make_guidance(student, ["one"], bad)


def test_distillation_is_seeded_and_refuses_the_shipped_folder() -> None:
    a, info = distil_student(steps=2, batch=4, progress=False)
    b, _ = distil_student(steps=2, batch=4, progress=False)
    assert info["train_images"] == 1297 and info["guidance_range"] == [1.0, 8.0]
    assert all(torch.equal(p, q) for p, q in zip(a.unet.parameters(), b.unet.parameters()))
    with pytest.raises(SystemExit):
        distil_main(["--steps", "1", "--out", str(STUDENT_WEIGHTS_DIR), "--no-progress"])


@pytest.mark.slow
def test_student_benchmark_quick_writes_and_protects(tmp_path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "flow_student.py"), "--quick", "--out-dir", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    state = json.loads((tmp_path / "flow_student.json").read_text())
    assert state["quick"] and state["c_round_trips"]["nfe"]["student"] == 3
    assert (tmp_path / "flow_student.md").read_text().startswith("# The guidance-distilled student")
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)    # its own files: replaced
    assert again.returncode == 0, again.stderr[-2000:]
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "flow_student.json").write_text("mine\n")
    refused = subprocess.run([*cmd[:-1], str(foreign)], capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode != 0 and (foreign / "flow_student.json").read_text() == "mine\n"
    assert not (foreign / "flow_student.md").exists()
