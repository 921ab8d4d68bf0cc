"""The README's quick start works on an ordinary Linux machine, and the repository path is set in one place.

Static checks: the quick start is on the README's first screen, installs the CPU build of
PyTorch from its wheel index, trusts the notebooks and starts JupyterLab at the repository root;
instructions name JupyterLab 4's way to trust a notebook; nothing claims the notebooks run "in
seconds"; every reference to the GitHub repository follows ``tools/set_repository.py``.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
sys.path.insert(0, str(ROOT / "tools"))
import set_repository  # noqa: E402

FIRST_SCREEN_LINES = 45  # what a browser shows of the README without scrolling, generously


def _quick_start() -> str:
    m = re.search(r"^## Quick start[^\n]*\n(.*?)(?=^## )", README, re.S | re.M)
    assert m, "README has no '## Quick start' section"
    return m.group(1)


def _commands(section: str) -> list[str]:
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", section, re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_quick_start_is_on_the_first_screen_right_after_the_intro():
    lines = README.splitlines()
    headings = [i for i, line in enumerate(lines) if line.startswith("## ")]
    assert headings and lines[headings[0]].startswith("## Quick start"), "the quick start must be the first section"
    end = headings[1] if len(headings) > 1 else len(lines)
    block_end = max(i for i in range(headings[0], end) if lines[i].startswith("```"))
    assert block_end < FIRST_SCREEN_LINES, f"the quick start's commands end on line {block_end + 1}"


def test_quick_start_commands_work_on_an_ordinary_linux_machine():
    section = _quick_start()
    cmds = _commands(section)
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in cmds  # portable, CPU wheel
    assert 'pip install -e ".[lab]"' in cmds
    assert "jupyter trust notebooks/*.ipynb" in cmds
    # JupyterLab serving the repository root (so notebooks' ../docs links resolve), opening 01. Given
    # only a file, jupyter_server makes the file's folder its root_dir (notebooks/): the option is needed.
    assert cmds[-1] == "jupyter lab --notebook-dir=. notebooks/01_ddim_inversion.ipynb"
    assert re.match(r"git clone \S+ && cd [\w.-]+$", cmds[0]), cmds[0]
    order = [next(i for i, c in enumerate(cmds) if c.startswith(p)) for p in
             ("git clone", "pip install torch", "pip install -e", "jupyter trust", "jupyter lab")]
    assert order == sorted(order), cmds
    assert "--allow-root" in section and "torch==2.13.0" in section


def _markdown_texts() -> dict[str, str]:
    texts = {"README.md": README}
    for path in sorted((ROOT / "docs").glob("*.md")):
        texts[f"docs/{path.name}"] = path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        texts[path.name] = "\n".join("".join(c["source"]) for c in nb["cells"])
    return texts


def test_trust_instructions_name_jupyterlab_4s_command():
    """JupyterLab 4 has no File > Trust Notebook menu item: the command is in the Command Palette."""
    bad = {name: m.group(0) for name, text in _markdown_texts().items()
           for m in [re.search(r"File\s*(>|→|->|&gt;)\s*Trust", text)] if m}
    assert not bad, f"'File > Trust' is not in JupyterLab 4 (use the Command Palette's \"Trust Notebook\"): {bad}"
    for name, text in _markdown_texts().items():
        if "Trust Notebook" in text:
            assert "Command Palette" in " ".join(text.split()), name


def test_no_runs_in_seconds_claim():
    bad = [name for name, text in _markdown_texts().items() if re.search(r"\bin seconds\b", text, re.I)]
    assert not bad, f"the notebooks take minutes on one CPU (README's times table): {bad}"


# --------------------------------------------------------------------------- repository path
def test_every_repository_reference_follows_pyproject():
    assert set_repository.main(["--check"]) == 0
    want = set_repository.configured()
    badges = re.findall(r"\[!\[[^\]]*\]\([^)]*\)\]\(([^)]+)\)", README)
    assert len(badges) >= 2 and all(want in b for b in badges), badges


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    files = []
    for name in out.stdout.splitlines():
        path = ROOT / name
        if path.is_file() and path.suffix in {".md", ".ipynb", ".toml", ".yml", ".yaml", ".cfg", ".py", ".txt", ""}:
            files.append(path)
    return files


def test_set_repository_rewrites_every_file_that_names_the_repository(tmp_path, monkeypatch):
    """Any tracked file naming OWNER/NAME is one the tool rewrites, and a rewrite leaves no old path."""
    want = set_repository.configured()
    naming = {p.relative_to(ROOT).as_posix() for p in _tracked_text_files()
              if want in p.read_text(encoding="utf-8", errors="replace")}
    naming.discard("tests/test_quick_start.py")
    for rel in naming:
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    monkeypatch.setattr(set_repository, "ROOT", tmp_path)
    assert set_repository.main(["someone-else/a-fork"]) == 0
    left = sorted(rel for rel in naming if want in (tmp_path / rel).read_text(encoding="utf-8"))
    assert not left, f"tools/set_repository.py leaves the old path {want} in {left}"
    assert set_repository.configured() == "someone-else/a-fork"
    assert set_repository.main(["--check"]) == 0
    assert "github.com/someone-else/a-fork" in (tmp_path / "README.md").read_text(encoding="utf-8")
