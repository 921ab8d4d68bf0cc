"""The package's module graph (no import cycle, one registry that needs no extra import), and CI runs the README's test command."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cfginv_lite"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Package modules ``path`` imports when it is imported (module level; relative imports resolved).

    Imports inside functions (lazy, at call time) and under ``if TYPE_CHECKING:`` do not count.
    """
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
                   isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
               for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.startswith("cfginv_lite"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cfginv_lite"))
    return found


def test_no_import_cycle():
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {d for d in _imports(p) if d in modules and d != m and not m.startswith(d + ".")}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path + [m, d])}")
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_registry_is_complete_on_import():
    code = ("import sys; from cfginv_lite.methods import METHODS; "
            "sys.exit(0 if {'naive', 'original', 'anderson', 'null-text', 'negative-prompt'} <= set(METHODS) else 1)")
    # timeout: a hang guard for one import (seconds on a loaded machine), not a measurement
    assert subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, timeout=900).returncode == 0


def test_ci_runs_exactly_the_readme_test_command():
    """`.ci/run` must run the command a reader copies from the README, not a private variant."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    commands = re.findall(r"(python3 -m pytest [^\n`]+)", readme)
    assert len(set(commands)) == 1, f"the README should give one test command, found {commands}"
    ci = (root / ".ci" / "run").read_text()
    body = re.search(r"readme_tests\(\) \{\n\s*(.+?)\n\}", ci).group(1).strip()
    assert body == commands[0].strip()
    assert ci.count("readme_tests >") + ci.count("readme_tests>") == 2, "run it natively and on the baseline paths"
    assert "ATEN_CPU_CAPABILITY=default" in ci and "ONEDNN_MAX_CPU_ISA=SSE41" in ci
