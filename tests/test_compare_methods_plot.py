"""``benchmarks/compare_methods.py --plot-only`` redraws the figure from the JSON, computing nothing."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("compare_methods_script", ROOT / "benchmarks" / "compare_methods.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plot_only_redraws_the_png_from_the_json(tmp_path, monkeypatch):
    cm = _script()
    monkeypatch.setattr(cm, "load_model", lambda *a, **k: pytest.fail("--plot-only must not load a model"))
    per_image = [{"case": c, "cfg": 7.5, "steps": 20, "label": lab, "image_rmse": [1e-5 * (k + 1), 0.1, 0.3]}
                 for c in cm.CASES for k, lab in enumerate(["naive", "edict (own sampler)"])]
    (tmp_path / "compare_methods.json").write_text(json.dumps({"rows": [], "per_image": per_image, "runs": []}))
    assert cm.main(["--plot-only", "--out-dir", str(tmp_path)]) == 0
    png = tmp_path / "compare_methods.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "compare_methods.md").exists()


def test_plot_only_replaces_only_its_own_png(tmp_path, capsys):
    cm = _script()
    per_image = [{"case": c, "cfg": 7.5, "steps": 20, "label": "naive", "image_rmse": [0.1, 0.2]} for c in cm.CASES]
    (tmp_path / "compare_methods.json").write_text(json.dumps({"rows": [], "per_image": per_image, "runs": []}))
    png = tmp_path / "compare_methods.png"
    png.write_bytes(b"someone else's figure")
    with pytest.raises(SystemExit, match="not written by this script"):
        cm.main(["--plot-only", "--out-dir", str(tmp_path)])
    assert png.read_bytes() == b"someone else's figure"
    assert cm.main(["--plot-only", "--out-dir", str(tmp_path), "--force"]) == 0
    assert cm._PNG_IS_OURS(png)                        # marked as the script's own in its metadata
    assert cm.main(["--plot-only", "--out-dir", str(tmp_path)]) == 0   # its own figure: replaced without --force


def test_plot_only_needs_per_image_values(tmp_path):
    cm = _script()
    with pytest.raises(SystemExit, match="needs"):
        cm.main(["--plot-only", "--out-dir", str(tmp_path)])
    (tmp_path / "compare_methods.json").write_text(json.dumps({"rows": [], "runs": []}))
    with pytest.raises(SystemExit, match="no per-image"):
        cm.main(["--plot-only", "--out-dir", str(tmp_path)])


def test_committed_json_has_per_image_values_for_every_row():
    state = json.loads((ROOT / "docs" / "compare_methods.json").read_text())
    keys = {(d["case"], d["cfg"], d["steps"], d["label"]) for d in state["per_image"]}
    assert {(r["case"], r["cfg"], r["steps"], r["label"]) for r in state["rows"]} <= keys


def test_horizontal_distribution_plot_puts_groups_on_rows_and_values_on_a_log_x_axis():
    import matplotlib.pyplot as plt
    from cfginv_lite.presentation import distribution_plot

    fig, ax = plt.subplots()
    distribution_plot(ax, {"a": [1e-5, 2e-5], "b": [0.1, 0.2]}, ylabel="rmse", horizontal=True)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "rmse"
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # first group on top
    plt.close(fig)
