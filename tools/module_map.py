"""Print the package's module map: lines per module and who imports it.

``python tools/module_map.py`` lists every module of ``cfginv_lite`` with its line count, the
package modules that import it (any import anywhere in the file, as the structure test sees
them) and how many notebooks, tests and benchmarks name it. The house rules it helps check
(no module above 350 lines, no cycle) are asserted by ``tests/test_package_structure.py``.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_package_structure import _import_graph  # noqa: E402  (one import walker, shared with the test)


def _outside_users(module: str) -> dict[str, int]:
    """Notebooks, tests and benchmarks whose source names ``module`` (``cfginv_lite.x`` or ``from cfginv_lite import x``)."""
    short = module.split(".", 1)[1] if "." in module else module
    pattern = re.compile(rf"cfginv_lite\.{re.escape(short)}\b|from cfginv_lite import [^\n]*\b{re.escape(short)}\b")
    counts = {}
    for kind, folder, glob in (("notebooks", "notebooks", "*.ipynb"), ("tests", "tests", "*.py"),
                               ("benchmarks", "benchmarks", "**/*.py")):
        counts[kind] = sum(bool(pattern.search(p.read_text())) for p in (ROOT / folder).glob(glob))
    return counts


def main() -> None:
    graph = _import_graph()
    importers = {m: sorted(k for k, deps in graph.items() if m in deps) for m in graph}
    print(f"{'module':34} {'lines':>5} {'pkg importers':>13} {'nb':>3} {'tests':>5} {'bench':>5}")
    for m in sorted(graph):
        path = ROOT / (m.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / m.replace(".", "/") / "__init__.py"
        lines = len(path.read_text().splitlines())
        out = _outside_users(m) if m != "cfginv_lite" else {"notebooks": 0, "tests": 0, "benchmarks": 0}
        print(f"{m:34} {lines:5d} {len(importers[m]):13d} {out['notebooks']:3d} {out['tests']:5d} {out['benchmarks']:5d}")
    if "--json" in sys.argv:
        print(json.dumps({m: {"importers": importers[m]} for m in graph}, indent=1))


if __name__ == "__main__":
    main()
