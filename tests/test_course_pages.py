"""The course's reading pages (glossary, seed, what the course does not tell about SD) exist, are
linked from the README, and every relative link in them resolves to a file of the repository.

Reuses ``tests/test_quick_start.py``'s README and Markdown helpers.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_quick_start import README, ROOT, _markdown_texts

PAGES = ("docs/glossary.md", "docs/seed.md", "docs/what_this_does_not_tell_you_about_sd.md")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SEED_DIR = ROOT.parent / "shared" / "seed"   # the author's text, beside the checkout where one is provided


def _without_code(text: str) -> str:
    """Markdown text with fenced blocks and inline code removed (brackets there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(text: str) -> list[str]:
    """Targets of the Markdown links and images in ``text`` that point inside the repository."""
    out = []
    for target in _LINK.findall(_without_code(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "/")):
            continue  # http(s)://, mailto:, in-page anchors, absolute paths
        out.append(target.split("#", 1)[0])
    return [t for t in out if t]


def test_relative_links_parser():
    text = ("[a](x.md) ![b](img.png) [c](https://e.org) [d](#top) [e](../n/x.ipynb#cell)\n"
            "`ts[i](no)`\n```text\n[f](in_code.md)\n```\n")
    assert relative_links(text) == ["x.md", "img.png", "../n/x.ipynb"]


@pytest.mark.parametrize("page", PAGES)
def test_page_exists_and_is_linked_from_the_readme(page):
    path = ROOT / page
    assert path.is_file(), f"{page} is missing"
    assert path.read_text(encoding="utf-8").startswith("# "), f"{page} must start with a title"
    assert page in relative_links(README), f"README.md does not link {page}"
    assert page in _markdown_texts(), f"{page} is not among the Markdown files the quick-start checks scan"


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    path = ROOT / page
    links = relative_links(path.read_text(encoding="utf-8"))
    assert links, f"{page} links nothing"
    broken = [t for t in links if not (path.parent / t).resolve().exists()]
    assert not broken, f"{page}: links that resolve to no file: {broken}"
    outside = [t for t in links if ROOT not in (path.parent / t).resolve().parents]
    assert not outside, f"{page}: links leaving the repository: {outside}"


def test_seed_page_quotes_the_seed_whole_once():
    seeds = sorted(SEED_DIR.glob("*.txt")) if SEED_DIR.is_dir() else []
    if not seeds:
        pytest.skip(f"no seed text at {SEED_DIR}")
    page = (ROOT / "docs" / "seed.md").read_text(encoding="utf-8")
    for seed in seeds:
        text = seed.read_text(encoding="utf-8")
        assert page.count(text) == 1, f"docs/seed.md must quote {seed.name} whole and verbatim, once"
