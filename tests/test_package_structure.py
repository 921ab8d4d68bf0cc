"""The package's module graph (no import cycle, one registry that needs no extra import), and CI runs the README's test command."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cfginv_lite"


def _module(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, mod: str, modules: set[str]) -> set[str]:
    """Package modules ``path`` imports, from anywhere in its AST (relative imports resolved).

    Every ``Import``/``ImportFrom`` node counts: at module level, inside functions (lazy, at
    call time) and under ``if TYPE_CHECKING:`` alike, since a cycle hidden in a function body is
    still a cycle. ``from pkg import name`` depends on the submodule ``pkg.name`` when there is
    one, otherwise on ``pkg`` itself (a name its ``__init__`` defines). Importing ``a.b.c`` also
    runs the package ``a.b``; the packages a module lives in (always imported before it) are
    counted only when it imports a name from them explicitly.
    """
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    ancestors = {".".join(mod.split(".")[:i]) for i in range(1, len(mod.split(".")))}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        elif isinstance(node, ast.Import):
            targets = {a.name for a in node.names}
        else:
            continue
        for target in targets:
            if not target.startswith("cfginv_lite"):
                continue
            found.add(target)
            parts = target.split(".")
            found.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p not in ancestors)
    return {d for d in found if d in modules and d != mod}


def _import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {_module(p, package): p for p in package.rglob("*.py")}
    return {m: _imports(p, m, set(paths)) for m, p in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of ``graph``, each as ``[a, b, ..., a]`` (one per edge that closes a cycle in a depth-first walk)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                found.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_no_import_cycle():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_check_sees_every_import(tmp_path):
    """Imports inside functions and under TYPE_CHECKING count; relative imports are resolved."""
    pkg = tmp_path / "cfginv_lite"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    assert _cycles(_import_graph(pkg)) == [["cfginv_lite.a", "cfginv_lite.sub.b", "cfginv_lite.a"]]
    (pkg / "sub" / "b.py").write_text("X = 1\n")
    assert _cycles(_import_graph(pkg)) == []


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


#: The house limits (issue 19): a module a reader can hold in mind, a solver loop on one screen.
MAX_MODULE_LINES = 350
MAX_SOLVER_BODY_LINES = 40


def _code_lines(path: Path, node: ast.FunctionDef) -> int:
    """Lines of ``node``'s body that hold code: not its docstring, blank lines or comment-only lines."""
    body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                             and isinstance(node.body[0].value, ast.Constant)) else node.body
    text = path.read_text().splitlines()
    lines = {n for st in body for sub in ast.walk(st) if hasattr(sub, "lineno")
             for n in range(sub.lineno, (sub.end_lineno or sub.lineno) + 1)}
    return sum(1 for n in lines if text[n - 1].strip() and not text[n - 1].strip().startswith("#"))


def _solvers(package: Path = PACKAGE) -> list[tuple[Path, ast.FunctionDef]]:
    """Public solver functions: ``invert_*``, ``sample_*`` and ``edit``, at module level."""
    return [(p, node) for p in sorted(package.rglob("*.py")) for node in ast.parse(p.read_text()).body
            if isinstance(node, ast.FunctionDef) and (node.name.startswith(("invert_", "sample_")) or node.name == "edit")]


def test_no_module_is_longer_than_the_limit():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_every_solver_body_fits_on_one_screen():
    solvers = _solvers()
    assert {"invert_naive", "sample_ddim", "invert_original", "invert_fixed_point", "invert_edict", "edit",
            "invert_null_text"} <= {node.name for _, node in solvers}   # the walk finds them
    long = {f"{p.name}:{node.name}": n for p, node in solvers if (n := _code_lines(p, node)) > MAX_SOLVER_BODY_LINES}
    assert not long, f"solver bodies over {MAX_SOLVER_BODY_LINES} code lines: {long}"


def test_the_code_line_count_counts_code_only(tmp_path):
    """Guards the count above: a docstring, comments and blank lines do not count, statements do."""
    src = tmp_path / "m.py"
    src.write_text('def invert_x(a):\n    """Doc\n    string."""\n    # comment\n\n    b = (a +\n         1)\n    return b\n')
    (node,) = ast.parse(src.read_text()).body
    assert _code_lines(src, node) == 3
