"""Every package a notebook imports is installed by the README's install (`pip install -e ".[lab]"`)
and by the Binder environment.

Static: the notebooks' code cells are parsed (ast), not run. A notebook's imports are its cells'
import statements plus, for each package module a cell names (``from cfginv_lite.models.tiny import
...``), that module's own imports, lazy ones inside functions included: notebook 07 calls
``build_tiny_stable_diffusion``, which imports ``transformers`` only when called.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cfginv_lite"
# Import names whose distribution is named differently, for when the distribution is not installed
# here (packages_distributions() answers for the installed ones).
KNOWN = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python",
         "skimage": "scikit-image", "IPython": "ipython"}
# conda-forge names of the distributions, where they differ (binder/environment.yml).
CONDA = {"matplotlib": "matplotlib-base"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[]", req.strip(), maxsplit=1)[0])


def _guarded_by_import_error(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``try:`` blocks that catch ImportError (optional imports)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            names = set()
            for h in node.handlers:
                for t in ([h.type] if not isinstance(h.type, ast.Tuple) else h.type.elts) if h.type else []:
                    if isinstance(t, ast.Name):
                        names.add(t.id)
            if names & {"ImportError", "ModuleNotFoundError", "Exception"}:
                out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def imports_of(source: str) -> set[str]:
    """Absolute module names imported anywhere in ``source`` (optional imports excluded)."""
    tree = ast.parse(source)
    optional = _guarded_by_import_error(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _cell_source(cell: dict) -> str:
    src = "".join(cell["source"])
    # IPython magics and shell escapes are not Python
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())


def notebook_imports(path: Path) -> set[str]:
    """Top-level packages a notebook needs: its cells' imports and those of package modules it names."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            modules |= imports_of(_cell_source(cell))
    needed = {m.split(".")[0] for m in modules}
    for m in modules:
        if m.startswith(PACKAGE + "."):
            parts = m.split(".")
            file = ROOT.joinpath(*parts).with_suffix(".py")
            if not file.exists():
                file = ROOT.joinpath(*parts, "__init__.py")
            if file.exists():  # a module (not a name imported from one)
                needed |= {i.split(".")[0] for i in imports_of(file.read_text(encoding="utf-8"))}
    return {n for n in needed if n != PACKAGE and n not in sys.stdlib_module_names and n != "__future__"}


@functools.lru_cache(maxsize=None)
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution(module: str) -> str:
    names = _installed().get(module)
    if names:
        return _norm(names[0])
    return _norm(KNOWN.get(module, module))


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    lab = {_requirement_name(r) for r in project["optional-dependencies"]["lab"]}
    return core, lab


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_imports_are_collected_statically():
    """The collector itself: lazy imports of a named module count; optional and stdlib ones do not."""
    src = "import numpy as np\nfrom a.b import c\ntry:\n    import optional_pkg\nexcept ImportError:\n    pass\n" \
          "def f():\n    import lazy_pkg\n"
    assert imports_of(src) == {"numpy", "a.b", "a.b.c", "lazy_pkg"}
    assert "transformers" in notebook_imports(ROOT / "notebooks" / "07_stable_diffusion.ipynb")
    assert distribution("sklearn") == "scikit-learn"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_import_is_installed_by_the_lab_extra(notebook: Path):
    core, lab = declared()
    missing = sorted(d for d in map(distribution, notebook_imports(notebook)) if d not in core | lab)
    assert not missing, (f"{notebook.name} imports {missing}, which neither [project] dependencies nor the "
                         f"`lab` extra of pyproject.toml install (README: pip install -e \".[lab]\")")


def _conda_env_names(path: Path) -> set[str]:
    """Package names listed in a conda environment file (conda and pip sections; `-e .` skipped)."""
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r"\s*-\s+([A-Za-z0-9_.\-]+)", line)
        if m and not line.strip().startswith(("- -", "- pip:")):
            names.add(_norm(m.group(1)))
    return names


@pytest.mark.parametrize("env_file", ["binder/environment.yml", "environment.yml"])
def test_conda_environments_install_what_the_notebooks_import(env_file: str):
    names = _conda_env_names(ROOT / env_file)
    core, lab = declared()
    needed = {distribution(m) for nb in NOTEBOOKS for m in notebook_imports(nb)} | core | lab
    needed -= {"jupyterlab-widgets"}  # conda-forge's ipywidgets depends on it
    missing = sorted(d for d in needed if _norm(CONDA.get(d, d)) not in names)
    assert not missing, f"{env_file} lacks {missing}"
