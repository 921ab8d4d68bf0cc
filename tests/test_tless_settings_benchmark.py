"""benchmarks/tless_settings.py: a smoke run writes its table, resumes, and refuses foreign files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # two benchmark smoke runs: 9 s and 50 s on one loaded CPU thread

ROOT = Path(__file__).resolve().parents[1]
# Subprocess timeouts are a hang guard, not a measurement: CI runs these again on the baseline
# x86-64 code paths (about 3x slower, README) on shared, loaded machines, so the guard sits far
# above the run's time instead of near it (it was 300 s).
HANG_GUARD_S = 1800


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "benchmarks/tless_settings.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_quick_run_writes_every_variant_and_sampler_then_resumes_without_rework(tmp_path):
    done = _run("--quick", "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((tmp_path / "tless_settings.json").read_text())
    assert {(r["label"], r["sampler"]) for r in state["rows"]} == {
        (label, sampler) for label in ("naive, source label", "naive, destination label", "original, tless 0.25",
                                       "original, tless rounded to a whole level",
                                       "original, destination label (no tless)") for sampler in ("ddim", "lms")}
    assert {r["case"] for r in state["rows"]} == {"real", "decoded", "latent"}
    base = [r for r in state["rows"] if r["label"] == "naive, source label"]
    assert all(r["ratio"] == 1.0 for r in base)          # the reference against itself
    refined = [r for r in state["rows"] if r["label"].startswith("original")]
    assert all(r["nfe"] > 12 for r in refined)           # 6 steps: naive 12 NFE; the original refines more
    table = (tmp_path / "tless_settings.md").read_text()
    assert table.startswith("# The original method at its author's settings")
    # Run again without --resume: refuses to start over; with --resume: nothing left to compute.
    again = _run("--quick", "--out-dir", str(tmp_path))
    assert again.returncode != 0 and "--resume" in again.stderr
    resumed = _run("--quick", "--out-dir", str(tmp_path), "--resume")
    assert resumed.returncode == 0 and "cfg 5.5" not in resumed.stdout
    assert len(json.loads((tmp_path / "tless_settings.json").read_text())["rows"]) == len(state["rows"])


def test_files_it_did_not_write_are_refused(tmp_path):
    (tmp_path / "tless_settings.md").write_text("my notes\n")
    done = _run("--quick", "--out-dir", str(tmp_path))
    assert done.returncode != 0 and "was not written by this script" in done.stderr
    assert (tmp_path / "tless_settings.md").read_text() == "my notes\n"
    (tmp_path / "tless_settings.md").unlink()
    (tmp_path / "tless_settings.json").write_text("{}")
    done = _run("--quick", "--out-dir", str(tmp_path), "--resume")
    assert done.returncode != 0 and "was not written by this script" in done.stderr
