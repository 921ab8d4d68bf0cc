"""benchmarks/overview_figure.py: every committed method is on the overview, nothing foreign is overwritten."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "compare_methods.json"


def _script():
    spec = importlib.util.spec_from_file_location("overview_figure", ROOT / "benchmarks" / "overview_figure.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["overview_figure"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_committed_method_has_a_family_and_a_point() -> None:
    mod = _script()
    state = json.loads(COMMITTED.read_text())
    expected = {d["label"] for d in state["per_image"] if (d["case"], d["cfg"], d["steps"]) == (mod.CASE, mod.CFG, mod.STEPS)}
    pts = mod.points(state)
    assert {p["label"] for p in pts} == expected and len(expected) >= 10
    assert all(p["n"] >= 100 and p["q25"] <= p["median"] <= p["q75"] and p["cost"] > 0 for p in pts)
    # the figure's story, read off the committed numbers: the exact pairs with their own samplers sit at
    # round-off, far below every other family; negative-prompt is the cheapest method below naive's error
    by = {p["label"]: p for p in pts}
    exact = max(by[k]["median"] for k in ("edict (own sampler)", "bdia (own sampler)"))
    others = min(p["median"] for p in pts if p["family"] != "exact pairs, own sampler")
    print(f"exact pairs' worst median {exact:.2e} vs every other method's best {others:.2e}")
    assert exact < 1e-3 * others
    assert by["negative-prompt"]["cost"] == min(p["cost"] for p in pts) and by["negative-prompt"]["median"] < by["naive"]["median"]


def test_unknown_method_is_named() -> None:
    with pytest.raises(KeyError, match="no family for method 'mystery'"):
        _script().family_of("mystery")


def test_writes_its_png_and_refuses_a_foreign_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mod = _script()
    out = tmp_path / "overview.png"
    assert mod.main(["--out", str(out)]) == 0
    assert mod._ours(out) and out.stat().st_size > 10_000
    assert mod.main(["--out", str(out)]) == 0                     # its own file: replaced
    foreign = tmp_path / "mine.png"
    foreign.write_bytes(b"not the script's")
    with pytest.raises(SystemExit) as exit_info:
        mod.main(["--out", str(foreign)])
    assert exit_info.value.code == 2 and foreign.read_bytes() == b"not the script's"
    assert "--force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mod.main(["--json", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
