"""tools/normalize_notebooks.py and the saved-state clean-up in tools/execute_notebooks.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import execute_notebooks  # noqa: E402
import normalize_notebooks  # noqa: E402


def test_normalize_sets_kernelspec_keeps_language_version_and_is_idempotent(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    path = tmp_path / "a.ipynb"
    nbformat.write(nb, path)
    assert normalize_notebooks.main(["--check", str(path)]) == 1
    assert normalize_notebooks.main([str(path)]) == 0
    meta = nbformat.read(path, as_version=4).metadata
    assert meta.kernelspec == {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    assert meta.language_info["version"] == "3.11.7" and meta.language_info["pygments_lexer"] == "ipython3"
    before = path.read_bytes()
    assert normalize_notebooks.main(["--check", str(path)]) == 0
    normalize_notebooks.main([str(path)])
    assert path.read_bytes() == before


def _tqdm_bar(models: dict, n: int, value: float, total: float, left: str, right: str, hidden: bool) -> str:
    ids = {k: f"{k}{n}" for k in ("box", "layout", "l", "bar", "r")}
    models[ids["layout"]] = {"model_name": "LayoutModel", "state": {"visibility": "hidden"} if hidden else {}}
    models[ids["l"]] = {"model_name": "HTMLModel", "state": {"value": left}}
    models[ids["bar"]] = {"model_name": "FloatProgressModel", "state": {"value": value, "max": total}}
    models[ids["r"]] = {"model_name": "HTMLModel", "state": {"value": right}}
    models[ids["box"]] = {"model_name": "HBoxModel", "state": {
        "children": [f"IPY_MODEL_{ids[k]}" for k in ("l", "bar", "r")], "layout": f"IPY_MODEL_{ids['layout']}"}}
    return ids["box"]


def test_finished_progress_bars_collapse_and_show_their_final_text() -> None:
    models: dict = {}
    hidden = _tqdm_bar(models, 0, 20, 20, "DDIM\u2007inversion:\u2007\u200795%", "\u200719/20\u2007[00:01&lt;00:00]", True)
    kept = _tqdm_bar(models, 1, 20, 20, "kept:\u2007100%", "\u200720/20\u2007[00:01&lt;00:00]", False)
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": models}}
    view = "application/vnd.jupyter.widget-view+json"
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("display_data", data={view: {"model_id": m}, "text/plain": "  0%|          | 0/20"})
        for m in (hidden, kept)])]
    assert execute_notebooks.collapse_finished_progress_bars(nb) == 2
    texts = [o["data"]["text/plain"] for o in nb.cells[0].outputs]
    assert texts == ["DDIM inversion: 100%|██████████| 20/20 [00:01<00:00]", "kept: 100%|██████████| 20/20 [00:01<00:00]"]
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert saved["layout0"]["state"] == {"visibility": "hidden", "display": "none"}  # hidden bar: no gap
    assert saved["layout1"]["state"] == {}  # a bar left on screen stays
