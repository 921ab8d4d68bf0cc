"""tools/build_html.py: the static course page embeds the widget state and pins its scripts."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbconvert")
nbformat = pytest.importorskip("nbformat")
ipywidgets = pytest.importorskip("ipywidgets")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_html  # noqa: E402


def _notebook_with_a_widget(path: Path) -> str:
    """A saved notebook as tools/execute_notebooks.py writes it: a widget view and its state."""
    from ipywidgets.embed import dependency_state

    slider = ipywidgets.IntSlider(value=3, max=19, description="step")
    shown = ipywidgets.VBox([slider, ipywidgets.HTML("<b>frame</b>")])
    ipywidgets.jslink((slider, "value"), (ipywidgets.Play(max=19), "value"))
    state = dependency_state([shown], drop_defaults=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json":
                              {"state": state, "version_major": 2, "version_minor": 0}}
    view = {"model_id": shown.model_id, "version_major": 2, "version_minor": 0}
    nb.cells = [nbformat.v4.new_markdown_cell("# A tiny course page\n\nThe update $x_{t+1} = f(x_t)$."),
                nbformat.v4.new_code_cell("explorer", execution_count=1, outputs=[nbformat.v4.new_output(
                    "display_data", data={"application/vnd.jupyter.widget-view+json": view,
                                          "text/plain": "VBox(...)"})])]
    nbformat.write(nb, path)
    return shown.model_id


def test_html_embeds_widget_state_and_pins_exact_script_versions(tmp_path: Path) -> None:
    model_id = _notebook_with_a_widget(tmp_path / "tiny.ipynb")
    out = tmp_path / "site"
    assert build_html.main([str(tmp_path / "tiny.ipynb"), "--out", str(out)]) == 0
    page = (out / "tiny.html").read_text(encoding="utf-8")

    state = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">\s*(.*?)\s*</script>', page, re.S)
    assert state, "widget state not embedded"
    models = json.loads(state.group(1))["state"]
    assert model_id in models and any(m["model_name"] == "IntSliderModel" for m in models.values())
    assert model_id in page.split(state.group(0))[0]  # the view that refers to it

    version = build_html.HTML_MANAGER_VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert f"@jupyter-widgets/html-manager@{version}/dist/embed-amd.js" in page
    assert "@*" not in page
    assert "mathjax/2.7.7/" in page and "require.js/2.1.10/" in page  # MathJax is referenced: pinned too
    assert build_html.check_pinned(page) == []
    assert "tiny.html" in (out / "index.html").read_text(encoding="utf-8")


def test_pin_check_rejects_floating_versions() -> None:
    assert build_html.check_pinned("x/@jupyter-widgets/html-manager@*/dist/embed-amd.js")
    assert build_html.check_pinned("x/@jupyter-widgets/html-manager@^1.0.1/dist/embed-amd.js")


def test_build_never_overwrites_files_it_did_not_create(tmp_path: Path) -> None:
    _notebook_with_a_widget(tmp_path / "tiny.ipynb")
    out = tmp_path / "site"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        build_html.main([str(tmp_path / "tiny.ipynb"), "--out", str(out)])
    assert (out / "notes.txt").read_text() == "mine" and not (out / "tiny.html").exists()
