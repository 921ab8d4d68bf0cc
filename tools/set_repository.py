"""Set the GitHub repository path in one place and propagate it.

    python tools/set_repository.py OWNER/NAME     # rewrite pyproject, README badges, notebooks
    python tools/set_repository.py --check        # exit 1 if anything disagrees with pyproject

The path lives in ``pyproject.toml`` (``[project.urls] Repository``); README's Binder and
Colab badges and each notebook's guarded Colab install cell are derived from it.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URL_RE = re.compile(r'Repository = "https://github.com/([\w.-]+/[\w.-]+)"')
# Anything that looks like one of our repository references in README / notebooks.
REF_RE = re.compile(r"(github\.com/|gh/|github/)([\w.-]+/[\w.-]+?)(?=[/\"'\s)]|\.git|$)")


def configured() -> str:
    match = URL_RE.search((ROOT / "pyproject.toml").read_text())
    if not match:
        raise SystemExit("pyproject.toml has no [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return match.group(1)


def references() -> dict[str, set[str]]:
    """Repository paths referenced by README.md and each notebook's source cells."""
    found: dict[str, set[str]] = {}
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    for path in files:
        if not path.exists():
            continue
        text = path.read_text()
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
        found[path.name] = {m.group(2) for m in REF_RE.finditer(text)}
    return found


def rewrite(new: str) -> None:
    old = configured()
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                 *(ROOT / "notebooks").glob("*.ipynb")]:
        if path.exists():
            path.write_text(path.read_text().replace(old, new))


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        want = configured()
        bad = {name: refs - {want} for name, refs in references().items() if refs - {want}}
        for name, refs in bad.items():
            print(f"{name}: refers to {sorted(refs)}, pyproject says {want}")
        return 1 if bad else 0
    if len(argv) != 1 or "/" not in argv[0]:
        print(__doc__)
        return 2
    rewrite(argv[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
