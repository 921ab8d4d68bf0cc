"""benchmarks/transfer.py: the smoke run writes a readable table, resumes, and never replaces foreign files."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from cfginv_lite.presentation import load_transfer, transfer_entry, transfer_table

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("transfer_benchmark", ROOT / "benchmarks" / "transfer.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["transfer_benchmark"] = mod          # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("transfer")
    assert _script().main(["--quick", "--out-dir", str(out), "--rows", "label", "edit-label", "author-4x"]) == 0
    return out, json.loads((out / "transfer.json").read_text())


@pytest.mark.slow   # the module fixture quick_run: a benchmark smoke run, 42 s on one loaded CPU thread
def test_quick_run_writes_every_model_with_spread(quick_run: tuple[Path, dict]) -> None:
    out, data = quick_run
    assert data["written_by"] == "benchmarks/transfer.py" and data["per_digit"] == 1
    for model in ("digits", "digits-split", "mini-sd"):
        e = transfer_entry(data, "label", model)
        assert e["a"]["n"] == e["b"]["n"] == 10
        assert e["a"]["q25"] <= e["a"]["median"] <= e["a"]["q75"]
        r = e["ratio"]
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["value"] == pytest.approx(e["a"]["median"] / e["b"]["median"])
        assert len(e["a_per_image"]) == 10 and "paired_ratio" in e
    md = (out / "transfer.md").read_text()
    assert md.startswith("# What transfers") and "| finding | set |" in md and "not measurements" in md
    table = transfer_table(load_transfer(out / "transfer.json"))
    assert "label" in table and "digits: a/b" in table and "digits-split: a/b" in table
    assert "not measured" not in table


@pytest.mark.slow   # the module fixture quick_run: a benchmark smoke run, 42 s on one loaded CPU thread
def test_editing_row_scores_success_and_preservation(quick_run: tuple[Path, dict]) -> None:
    _, data = quick_run
    for model in ("digits", "digits-split", "mini-sd"):
        e = transfer_entry(data, "edit-label", model)
        for side in ("a", "b"):
            s = e[f"success_{side}"]
            assert s["n"] == 10 and 0 <= s["ci_low"] <= s["value"] <= s["ci_high"] <= 1
            assert e[side]["n"] == 10 and e[side]["median"] > 0          # style distances of real edits
            assert 0 < e[f"recon_{side}_median"] < 1
        assert e["a_per_image"] != e["b_per_image"]                        # two different inversions
    assert data["rows"]["edit-label"]["digits"]["tau"] == 0.5


@pytest.mark.slow   # the module fixture quick_run: a benchmark smoke run, 42 s on one loaded CPU thread
def test_calibrated_rows_run_at_each_models_own_cfg(quick_run: tuple[Path, dict]) -> None:
    out, data = quick_run
    calibration = json.loads((ROOT / "docs" / "calibration_50steps.json").read_text())["models"]   # author rows: 50 steps
    mod = _script()
    for model, key in mod.CALIBRATION_KEY.items():
        crossing = calibration[key]["crossings"]["4x"]["cfg"]
        got = data["rows"]["author-4x"][model]
        if crossing is None:                     # mini-sd never fails 4x up to CFG 10: nothing is run
            assert got["not_reached"] and got["cases"] == {}
        else:
            assert got["cfg"] == round(crossing, 2) and got["cases"]["real"]["a"]["n"] == 10
    assert data["rows"]["author-4x"]["digits"]["cfg"] != data["rows"]["author-4x"]["digits-split"]["cfg"]
    md = (out / "transfer.md").read_text()
    assert "CFG at naive 4x" in md and "naive never fails this much here" in md


@pytest.mark.slow   # the module fixture quick_run: a benchmark smoke run, 42 s on one loaded CPU thread
def test_resume_keeps_rows_and_foreign_files_are_refused(quick_run: tuple[Path, dict], tmp_path: Path) -> None:
    out, data = quick_run
    before = (out / "transfer.json").read_text()
    mod = _script()
    assert mod.main(["--quick", "--out-dir", str(out), "--rows", "label", "--resume"]) == 0   # nothing left to run
    after = json.loads((out / "transfer.json").read_text())
    assert after["rows"] == json.loads(before)["rows"] and len(after["runs"]) == 1   # no work: no run line
    foreign = tmp_path / "transfer.md"
    foreign.write_text("# my notes\n")
    with pytest.raises(SystemExit, match="not written by this script"):
        mod.main(["--quick", "--out-dir", str(tmp_path), "--rows", "label"])
    assert foreign.read_text() == "# my notes\n"
    with pytest.raises(SystemExit):
        mod.main(["--out-dir", str(tmp_path), "--per-digit", "0"])


def test_load_transfer_rejects_other_json(tmp_path: Path) -> None:
    bad = tmp_path / "transfer.json"
    bad.write_text(json.dumps({"rows": {}}))
    with pytest.raises(ValueError, match="not written by"):
        load_transfer(bad)
    with pytest.raises(FileNotFoundError, match="benchmarks/transfer.py"):
        load_transfer(tmp_path / "missing.json")


def test_swap_model_replaces_every_digits_load() -> None:
    text = json.dumps({"source": ['model = cl.load_model("digits")\n', "m2 = load_model('digits')"]})
    swapped, n = _script().swap_model(text, "mini-sd")
    assert n == 2 and "digits" not in swapped and swapped.count("mini-sd") == 2


def test_decide_follows_the_time_limit_and_counts_failed_cells() -> None:
    decide = _script().decide
    run = lambda nb, model, wall, raised=0: {"notebook": nb, "model": model, "wall_s": wall,
                                              "cells_with_errors": raised, "code_cells": 20}
    idle = {"02": (40.0, 60.0), "03": (60.0, 100.0)}
    fits = decide([run("02_x.ipynb", "digits", 80), run("02_x.ipynb", "mini-sd", 88)], idle)
    assert "x1.10" in fits and "estimated 44 s and 66 s (within" in fits and "can become the main model" in fits
    porting = decide([run("02_x.ipynb", "digits", 80), run("02_x.ipynb", "mini-sd", 60, raised=3)], idle)
    assert "3 of 20 code cells raised" in porting and "digits-specific code" in porting and "porting job" in porting
    slow = decide([run("03_y.ipynb", "digits", 100), run("03_y.ipynb", "mini-sd", 130)], idle)
    assert "estimated 78 s and 130 s (over" in slow and "keep the digits model" in slow


def test_committed_times_reads_the_readme_cost_table() -> None:
    times = _script().committed_times()
    assert {"02", "03"} <= set(times) and all(two > 0 and binder > 0 for two, binder in times.values())
