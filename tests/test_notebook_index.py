"""README's notebook table matches notebooks/, and every notebook is committed render-ready.

Render-ready means: executed (outputs saved), no saved errors, small enough for GitHub's
renderer, and, if it shows widgets, saved with their state (``tools/execute_notebooks.py``
stores it): nbviewer and static HTML can only draw widgets from that state, and GitHub
refuses to render a notebook whose ``metadata.widgets`` lacks the ``state`` key.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOTEBOOK_DIR = ROOT / "notebooks"
MAX_BYTES = int(1.5 * 1024 * 1024)
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# `[01_ddim_inversion.ipynb](notebooks/01_ddim_inversion.ipynb)`, also `./notebooks/...` and
# badge links such as `https://.../blob/main/notebooks/01_ddim_inversion.ipynb`.
_LINK = re.compile(r"notebooks/([A-Za-z0-9_.\-]+\.ipynb)")


def readme_notebooks(readme: Path = README) -> set[str]:
    """Notebook file names linked from the rows of README's tables (lines starting with ``|``)."""
    rows = [line for line in readme.read_text(encoding="utf-8").splitlines() if line.lstrip().startswith("|")]
    return {name for row in rows for name in _LINK.findall(row)}


def repo_notebooks(directory: Path = NOTEBOOK_DIR) -> set[str]:
    return {p.name for p in directory.glob("*.ipynb")}


def _load(name: str) -> dict[str, Any]:
    return json.loads((NOTEBOOK_DIR / name).read_text(encoding="utf-8"))


NOTEBOOKS = sorted(repo_notebooks())
per_notebook = pytest.mark.parametrize("name", NOTEBOOKS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no notebooks in notebooks/ yet"))])


def test_readme_table_and_notebook_folder_agree() -> None:
    if not README.exists():
        if not NOTEBOOKS:
            pytest.skip("neither README.md nor notebooks yet")
        pytest.fail(f"README.md is missing but notebooks/ has {NOTEBOOKS}; list them in its notebook table")
    listed, present = readme_notebooks(), set(NOTEBOOKS)
    assert listed, "README.md has no notebook table rows linking notebooks/NAME.ipynb"
    assert not listed - present, f"README.md links notebooks that do not exist: {sorted(listed - present)}"
    assert not present - listed, f"notebooks missing from README.md's table: {sorted(present - listed)}"


@per_notebook
def test_notebook_is_valid_and_committed_with_outputs(name: str) -> None:
    import nbformat

    nbformat.validate(nbformat.read(NOTEBOOK_DIR / name, as_version=4))
    code = [c for c in _load(name)["cells"] if c["cell_type"] == "code"]
    assert any(c.get("execution_count") is not None for c in code), (
        f"{name} has no executed code cell: run `python tools/execute_notebooks.py notebooks/{name}`")


@per_notebook
def test_notebook_has_no_saved_errors(name: str) -> None:
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(_load(name)["cells"])
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name} was saved with errors (cell, exception, message): {errors}"


@per_notebook
def test_notebook_is_small_enough_to_render(name: str) -> None:
    size = (NOTEBOOK_DIR / name).stat().st_size
    assert size < MAX_BYTES, f"{name} is {size / 2**20:.2f} MB (limit 1.5 MB): smaller figures, fewer frames"


@per_notebook
def test_notebook_widgets_are_saved_with_their_state(name: str) -> None:
    nb = _load(name)
    widgets = nb.get("metadata", {}).get("widgets")
    views = {o["data"][WIDGET_VIEW]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
             if WIDGET_VIEW in o.get("data", {})}
    if widgets is not None:
        # GitHub: "Invalid Notebook ... the 'state' key is missing from 'metadata.widgets'. Add
        # 'state' to each, or remove 'metadata.widgets'." (Colab saves the models without it.)
        assert widgets, f"{name}: empty metadata.widgets; remove it"
        for mime, entry in widgets.items():
            assert isinstance(entry, dict) and "state" in entry, (
                f"{name}: metadata.widgets[{mime!r}] has no 'state' key, so GitHub refuses to render the notebook")
    if views:
        state = (widgets or {}).get(WIDGET_STATE, {}).get("state", {})
        missing = sorted(views - set(state))
        assert not missing, (
            f"{name}: {len(missing)} widget output(s) without saved state; re-run it with "
            "`python tools/execute_notebooks.py` (stores widget state)")
