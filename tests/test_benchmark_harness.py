"""The harness the benchmark scripts share (:mod:`cfginv_lite.benchmark`): foreign files refused before
any work, atomic writes, ``--resume`` that keeps and skips finished rows, nothing lost to an interruption."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cfginv_lite.benchmark import OutputFile, Results, text_render
from cfginv_lite.outputs import OutputPathError
from cfginv_lite.ownership import first_line_is, json_marked, png_titled

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "benchmarks/example.py"
HEADER = "# Example table"


def _open(folder: Path, **kwargs) -> Results:
    """A results JSON with one Markdown table rendered from it, rows keyed by ``"key"``."""
    return Results(folder / "example.json", script=SCRIPT, fresh={"rows": [], "runs": []},
                   keys=lambda s: (r["key"] for r in s["rows"]),
                   renders={folder / "example.md": (first_line_is(HEADER),
                                                    text_render(lambda s: f"{HEADER}\n{len(s['rows'])} rows\n"))},
                   **kwargs)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_output_file_refuses_a_foreign_file_and_replaces_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "table.md"
    foreign.write_text("my notes\n")
    with pytest.raises(OutputPathError, match=r"not written by this script \(benchmarks/example.py\).*--force"):
        OutputFile(foreign, script=SCRIPT, owned=first_line_is(HEADER))
    assert foreign.read_text() == "my notes\n"
    OutputFile(foreign, script=SCRIPT, owned=first_line_is(HEADER), force=True).write_text(f"{HEADER}\n")
    own = OutputFile(foreign, script=SCRIPT, owned=first_line_is(HEADER))   # now ours: accepted without --force
    own.write_text(f"{HEADER}\nagain\n")
    assert foreign.read_text() == f"{HEADER}\nagain\n"


def test_a_file_that_turns_foreign_during_the_run_is_kept_and_the_results_saved_beside_it(tmp_path: Path) -> None:
    out = OutputFile(tmp_path / "table.md", script=SCRIPT, owned=first_line_is(HEADER))
    (tmp_path / "table.md").write_text("written meanwhile by hand\n")
    with pytest.raises(FileExistsError, match="appeared during the run"):
        out.write_text(f"{HEADER}\nresults\n")
    assert (tmp_path / "table.md").read_text() == "written meanwhile by hand\n"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("table.kept-")]
    assert len(kept) == 1 and kept[0].read_text() == f"{HEADER}\nresults\n"


def test_a_writer_that_raises_leaves_the_old_file_and_no_partial_one(tmp_path: Path) -> None:
    path = tmp_path / "table.md"
    path.write_text(f"{HEADER}\nold\n")
    out = OutputFile(path, script=SCRIPT, owned=first_line_is(HEADER))

    def broken(tmp: Path) -> None:
        tmp.write_text(f"{HEADER}\nhalf a ta")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        out.write(broken)
    assert path.read_text() == f"{HEADER}\nold\n" and _files(tmp_path) == ["table.md"]


def test_every_output_is_checked_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "example.md").write_text("my notes\n")
    with pytest.raises(OutputPathError, match="example.md.*not written by this script"):
        _open(tmp_path)
    assert _files(tmp_path) == ["example.md"]                    # no JSON created, the notes untouched
    with pytest.raises(OutputPathError, match="does not exist"):
        _open(tmp_path / "missing")


def test_rows_are_saved_as_they_finish_and_survive_an_interruption(tmp_path: Path) -> None:
    results = _open(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        for k in range(5):
            if k == 2:
                raise KeyboardInterrupt            # Ctrl-C in the middle of the third row
            results.add({"key": k, "value": k * k})
    saved = json.loads((tmp_path / "example.json").read_text())
    assert saved["written_by"] == SCRIPT and [r["key"] for r in saved["rows"]] == [0, 1]
    assert (tmp_path / "example.md").read_text() == f"{HEADER}\n2 rows\n"
    assert _files(tmp_path) == ["example.json", "example.md"]   # no temporary file left behind


def test_resume_keeps_finished_rows_and_skips_them(tmp_path: Path) -> None:
    first = _open(tmp_path)
    first.add({"key": "a", "value": 1})
    first.add({"key": "b", "value": 2})
    first.finish({"command": "first"})
    again = _open(tmp_path, resume=True)
    assert again.resumed and again.done("a") and again.done("b") and not again.done("c")
    ran = [k for k in ("a", "b", "c") if not again.done(k)]
    for k in ran:
        again.add({"key": k, "value": 3})
    again.finish({"command": "second"})
    saved = json.loads((tmp_path / "example.json").read_text())
    assert ran == ["c"] and [(r["key"], r["value"]) for r in saved["rows"]] == [("a", 1), ("b", 2), ("c", 3)]
    assert [r["command"] for r in saved["runs"]] == ["first", "second"]
    idle = _open(tmp_path, resume=True)
    idle.finish({"command": "nothing left"})                     # a resume with nothing to do is not a run
    assert len(json.loads((tmp_path / "example.json").read_text())["runs"]) == 2


def test_earlier_results_need_resume_or_force(tmp_path: Path) -> None:
    _open(tmp_path).add({"key": "a"})
    with pytest.raises(OutputPathError, match="holds earlier results.*--resume.*--force"):
        _open(tmp_path)
    fresh = _open(tmp_path, force=True)                          # --force starts over
    assert not fresh.resumed and fresh.state["rows"] == [] and not fresh.done("a")
    (tmp_path / "example.json").write_text(json.dumps({"written_by": "someone else", "rows": []}))
    with pytest.raises(OutputPathError, match="not written by this script"):
        _open(tmp_path, resume=True)
    with pytest.raises(OutputPathError, match="cannot --resume"):
        _open(tmp_path, resume=True, force=True)


def test_ownership_predicates(tmp_path: Path) -> None:
    md, js, png = tmp_path / "t.md", tmp_path / "r.json", tmp_path / "f.png"
    md.write_text(f"{HEADER}\n")
    assert first_line_is(HEADER)(md) and not first_line_is("# Other")(md)
    js.write_text(json.dumps({"rows": [], "per_image": []}))
    assert not json_marked(SCRIPT)(js) and json_marked(SCRIPT, legacy=lambda d: "per_image" in d)(js)
    js.write_text(json.dumps({"written_by": "other", "per_image": []}))   # a marker decides over the legacy test
    assert not json_marked(SCRIPT, legacy=lambda d: True)(js)
    js.write_text("[1, 2]")
    assert not json_marked(SCRIPT, legacy=lambda d: True)(js)
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Title", "mine")
    Image.new("RGB", (2, 2)).save(png, pnginfo=info)
    assert png_titled("mine")(png) and not png_titled("yours")(png) and not png_titled("mine")(md)


@pytest.mark.parametrize("name, script, marker", [
    ("calibration.json", "benchmarks/calibrate_cfg.py", "written_by"),
    ("calibration_50steps.json", "benchmarks/calibrate_cfg.py", "written_by"),
    ("editing.json", "benchmarks/editing.py", "tool"),
    ("flow_benchmark.json", "benchmarks/flow_benchmark.py", "written_by"),
    ("flow_edit.json", "benchmarks/flow_edit.py", "written_by"),
    ("flow_gates.json", "benchmarks/flow_gates.py", "written_by"),
    ("mini_sd_gates.json", "benchmarks/mini_sd_gates.py", "written_by"),
    ("tless_settings.json", "benchmarks/tless_settings.py", "written_by"),
    ("transfer.json", "benchmarks/transfer.py", "written_by"),
])
def test_committed_results_are_recognised_as_their_scripts_own(name: str, script: str, marker: str) -> None:
    assert json_marked(script, marker)(ROOT / "docs" / name)
    assert not json_marked("benchmarks/another.py", marker)(ROOT / "docs" / name)


def test_the_committed_compare_methods_json_resumes(tmp_path: Path) -> None:
    """It predates the ``written_by`` marker: ``--resume`` accepts it, keeps every row and skips them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_methods_script", ROOT / "benchmarks" / "compare_methods.py")
    cm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cm)
    shutil.copy(ROOT / "docs" / "compare_methods.json", tmp_path / "compare_methods.json")
    committed = json.loads((tmp_path / "compare_methods.json").read_text())
    args = cm.argparse.Namespace(out_dir=str(tmp_path), force=False, resume=True, per_digit=10)
    results = cm.open_results(args)
    assert results.resumed and results.state["rows"] == committed["rows"]
    assert all(results.done((r["case"], r["cfg"], r["steps"], r["label"])) for r in committed["rows"])
    args.resume = False
    with pytest.raises(OutputPathError, match="holds earlier results"):
        cm.open_results(args)


def _load(name: str):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"{name}_script"] = mod                # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_calibration_continues_the_committed_file_at_its_step_count_only(tmp_path: Path) -> None:
    cal = _load("calibrate_cfg")
    shutil.copy(ROOT / "docs" / "calibration.json", tmp_path / "calibration.json")
    committed = json.loads((tmp_path / "calibration.json").read_text())
    args = cal.argparse.Namespace(steps=20, quick=False, force=False)
    results = cal.open_results(tmp_path, args, 20)
    assert results.resumed and results.state["models"] == committed["models"]
    assert results.state["runs"] == committed["runs"]
    with pytest.raises(SystemExit, match="at 20 steps, not 4"):
        cal.open_results(tmp_path, args, 4)
    args.quick = True                                      # a smoke test never mixes into (or replaces) it
    with pytest.raises(OutputPathError, match="holds earlier results; pass --force"):
        cal.open_results(tmp_path, args, 4)


def test_transfer_resumes_the_committed_file_with_the_same_per_digit_only(tmp_path: Path) -> None:
    tr = _load("transfer")
    shutil.copy(ROOT / "docs" / "transfer.json", tmp_path / "transfer.json")
    committed = json.loads((tmp_path / "transfer.json").read_text())
    args = tr.argparse.Namespace(force=False, resume=True, quick=False, per_digit=committed["per_digit"])
    results = tr.open_results(tmp_path, args)
    assert results.resumed and results.state["rows"] == committed["rows"]
    assert all(results.done((key, model)) for key, by in committed["rows"].items() for model in by)
    args.per_digit += 1
    with pytest.raises(SystemExit, match="--per-digit"):
        tr.open_results(tmp_path, args)


def test_flow_benchmark_resumes_the_committed_file_at_its_size_only(tmp_path: Path) -> None:
    fb = _load("flow_benchmark")
    for name in ("flow_benchmark.json", "flow_benchmark.md"):
        shutil.copy(ROOT / "docs" / name, tmp_path / name)
    committed = json.loads((tmp_path / "flow_benchmark.json").read_text())
    args = fb.argparse.Namespace(out_dir=str(tmp_path), force=False, resume=True, quick=False, per_digit=10, steps=10)
    results = fb.open_results(args)
    assert results.resumed and results.state == committed
    assert all(results.done((key, c)) for key, cells in committed["cells"].items() for c in cells)
    assert fb.markdown(results.state) == (tmp_path / "flow_benchmark.md").read_text()   # the table it rendered
    args.steps = 4
    with pytest.raises(SystemExit, match="--steps 4"):
        fb.open_results(args)
    args.resume = False
    with pytest.raises(OutputPathError, match="holds earlier results"):
        fb.open_results(args)


def test_flow_edit_resumes_the_committed_file_from_before_the_runs_log(tmp_path: Path) -> None:
    """Its file has one run's ``command``/``env``/``minutes`` at the top: they become the first run, and the
    table rendered from the resumed state is the committed one, byte for byte."""
    fe = _load("flow_edit")
    for name in ("flow_edit.json", "flow_edit.md"):
        shutil.copy(ROOT / "docs" / name, tmp_path / name)
    committed = json.loads((tmp_path / "flow_edit.json").read_text())
    args = fe.argparse.Namespace(out_dir=str(tmp_path), force=False, resume=True, quick=False)
    results = fe.open_results(args, committed["n"], committed["steps"], committed["skip"])
    assert results.resumed and results.state["cells"] == committed["cells"]
    assert all(results.done(c) for c in ("1", "3", "7.5"))
    if "command" in committed:
        assert results.state["runs"][0] == {k: committed[k] for k in ("command", "env", "minutes")}
    assert fe.markdown(results.state) == (tmp_path / "flow_edit.md").read_text()
    with pytest.raises(SystemExit, match="skip 1"):
        fe.open_results(args, committed["n"], committed["steps"], 1)
