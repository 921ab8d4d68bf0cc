#!/usr/bin/env python
"""Build a static HTML rendering of the course from the saved notebooks, widgets included.

Usage::

    pip install -e ".[docs]"                    # nbconvert (and the browser tools)
    python tools/build_html.py                  # notebooks/*.ipynb -> site/
    python tools/build_html.py --vendor         # also bundle the widget renderer, MathJax and fonts
    python tools/build_html.py --vendor --vendor-from DIR   # the same from npm tarballs in DIR, offline
    python tools/build_html.py notebooks/04_tless.ipynb --out /tmp/course-html

Each notebook becomes ``<out>/<name>.html`` (nbconvert's ``lab`` template) and
``<out>/index.html`` links them. Nothing is executed: the pages show the outputs and the widget
state saved in the notebooks (``tools/execute_notebooks.py`` saves both), so the step explorers
work in the page without a kernel.

Pinned, not floating: the widget renderer is ``@jupyter-widgets/html-manager`` at exactly
:data:`HTML_MANAGER_VERSION` (the release whose ``@jupyter-widgets/base`` and ``controls``
match the ``jupyterlab_widgets`` that ipywidgets 8.1 installs; nbconvert's default is ``@*``),
require.js and MathJax at the exact versions nbconvert names (2.1.10, 2.7.7). The build fails
if a page references any script at ``@*`` or without an exact version.

Offline: the pages load these scripts from CDNs (jsdelivr, cdnjs) when they are *viewed*; with
no network the text and figures show and math stays as TeX source; each widget then shows its
text form (its ``text/plain`` repr, e.g. ``StepExplorer(methods=[...], frames=20)``), which a
small script hides once the widget renderer has drawn the widget. ``--vendor`` bundles
everything the pages load into ``<out>/_static/`` and points the pages at it, so widgets and
math also work offline (opened as ``file://``): the pinned html-manager with its icon fonts,
require.js, and MathJax (the npm package ``mathjax`` at exactly :data:`MATHJAX_VERSION`: its
loader, the ``TeX-AMS_CHTML-full`` and ``Safe`` configurations, the TeX input, the CommonHTML
output and the TeX web fonts (woff) that output requests; about 1.6 MB of the package's 20 MB).
The three packages come from the npm registry (``npm pack``); the tarballs are kept in
``~/.cache/cfginv-lite/npm`` (``$CFGINV_NPM_CACHE``) and reused, and ``--vendor-from DIR``
takes them from ``DIR`` instead (no npm, no network).

The output folder is the script's own: it records what it wrote in ``<out>/.build_html.json``
and refuses to overwrite any file it did not write (``site/`` is git-ignored).
"""
from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Exact @jupyter-widgets/html-manager release for ipywidgets 8.1.x / jupyterlab_widgets 3.0.x
#: (both depend on @jupyter-widgets/base ^6.0.12 and controls ^5.0.13).
HTML_MANAGER_VERSION = "1.0.15"
WIDGETS_CDN = "https://cdn.jsdelivr.net/npm/"
REQUIREJS_VERSION = "2.1.10"
REQUIRE_JS_URL = f"https://cdnjs.cloudflare.com/ajax/libs/require.js/{REQUIREJS_VERSION}/require.min.js"
#: nbconvert's MathJax (its templates are written for MathJax 2), pinned.
MATHJAX_VERSION = "2.7.7"
MATHJAX_CONFIG = "TeX-AMS_CHTML-full,Safe"
MATHJAX_URL = f"https://cdnjs.cloudflare.com/ajax/libs/mathjax/{MATHJAX_VERSION}/latest.js?config={MATHJAX_CONFIG}"
#: What the pages need of the mathjax npm package (paths under its ``package/``): the loader, the
#: two configurations MATHJAX_URL names, the TeX input, the CommonHTML output with its font data,
#: the extensions they load on demand, and the web fonts CommonHTML requests (woff only: every
#: browser that runs MathJax 2.7 reads woff).
MATHJAX_FILES = ("MathJax.js", f"config/{MATHJAX_CONFIG.split(',')[0]}.js", "config/Safe.js", "extensions/",
                 "jax/input/TeX/", "jax/element/", "jax/output/CommonHTML/", "fonts/HTML-CSS/TeX/woff/")
MATHJAX_SKIP = ("extensions/a11y/",)  # the accessibility explorer (speech rules, 2 MB), loaded only from its menu
NPM_PACKAGES = {"html-manager": f"@jupyter-widgets/html-manager@{HTML_MANAGER_VERSION}",
                "requirejs": f"requirejs@{REQUIREJS_VERSION}", "mathjax": f"mathjax@{MATHJAX_VERSION}"}
MANIFEST = ".build_html.json"
#: The html-manager resolves its Font Awesome files against the page's origin, not its own
#: folder, so the Play widget's icons can come out as empty boxes; plain characters instead.
ICON_FALLBACK_CSS = ("".join(f".widget-play .fa-{name}:before{{content:'{char}';font-family:sans-serif;font-weight:normal}}"
                             for name, char in [("play", "\\25B6"), ("pause", "\\275A\\275A"), ("stop", "\\25A0"),
                                                ("retweet", "\\21BB")])
                     # and the widgets' text in the page's sans-serif, as in JupyterLab
                     + ".jupyter-widgets{font-family:var(--jp-ui-font-family,system-ui,-apple-system,"
                       "'Segoe UI',Helvetica,Arial,sans-serif)}")
WIDGET_STATE_TAG = '<script type="application/vnd.jupyter.widget-state+json">'
WIDGET_VIEW_RE = re.compile(r'(<script type="application/vnd\.jupyter\.widget-view\+json">\s*(\{.*?\})\s*</script>)', re.S)
FALLBACK_CLASS = "cfginv-widget-fallback"
#: Shows each widget's text until the renderer has drawn it: html-manager inserts a
#: ``div.widget-subarea`` before the view's script tag and draws into it. Without the renderer
#: (offline, no --vendor) nothing is drawn and the text stays.
FALLBACK_SCRIPT = (f"<style>pre.{FALLBACK_CLASS}{{white-space:pre-wrap;color:#555;font-size:12px;margin:2px 0}}</style>\n"
                   "<script>(function(){var n=0,t=setInterval(function(){n+=1;"
                   f"document.querySelectorAll('pre.{FALLBACK_CLASS}').forEach(function(p){{"
                   "var a=p.parentElement;if(a&&a.querySelector('.widget-subarea *')){p.style.display='none';}});"
                   "if(n>240){clearInterval(t);}},250);})();</script>")


def html_manager_url(version: str = HTML_MANAGER_VERSION, cdn: str = WIDGETS_CDN) -> str:
    return f"{cdn}@jupyter-widgets/html-manager@{version}/dist/embed-amd.js"


def check_pinned(page: str) -> list[str]:
    """Problems with the script versions a page references (empty if all are pinned)."""
    problems = []
    if "@*" in page:
        problems.append("a script is loaded at version @* (unpinned)")
    for m in re.finditer(r"@jupyter-widgets/html-manager@([^/'\"]+)/", page):
        if not re.fullmatch(r"\d+\.\d+\.\d+", m.group(1)):
            problems.append(f"html-manager at a version range {m.group(1)!r}, not an exact version")
    for m in re.finditer(r"(?:mathjax|require\.js)/([^/'\"]+)/", page):
        if not re.fullmatch(r"\d+\.\d+\.\d+", m.group(1)):
            problems.append(f"{m.group(0)} is not an exact version")
    return problems


def widget_texts(nb) -> dict[str, str]:
    """model_id -> the text/plain saved next to each widget view in the notebook's outputs."""
    texts = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            view = data.get("application/vnd.jupyter.widget-view+json")
            if view and data.get("text/plain"):
                text = data["text/plain"]
                texts[view["model_id"]] = "".join(text) if isinstance(text, list) else str(text)
    return texts


def add_text_fallbacks(page: str, texts: dict[str, str]) -> str:
    """After every widget view in ``page``, its text form, shown until the widget renders."""
    def one(m: re.Match) -> str:
        try:
            model_id = json.loads(m.group(2)).get("model_id", "")
        except ValueError:
            return m.group(1)
        text = texts.get(model_id)
        if not text:
            return m.group(1)
        return (m.group(1) + f'<pre class="{FALLBACK_CLASS}" data-model-id="{html.escape(model_id)}" '
                f'title="the widget needs its renderer (network, or a --vendor build)">{html.escape(text)}</pre>')
    page, n = WIDGET_VIEW_RE.subn(one, page)
    if n and FALLBACK_CLASS in page:
        page = page.replace("</head>", FALLBACK_SCRIPT + "\n</head>", 1)
    return page


def export(path: Path, *, renderer_url: str, require_url: str, assets_url: str,
           mathjax_url: str = MATHJAX_URL) -> str:
    """One notebook as a standalone HTML page (nbconvert lab template) with its widget state."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.widget_renderer_url = renderer_url  # used for the v2 *and* the legacy branch: no @*
    exporter.html_manager_semver_range = HTML_MANAGER_VERSION
    exporter.jupyter_widgets_base_url = WIDGETS_CDN
    exporter.require_js_url = require_url
    exporter.mathjax_url = mathjax_url
    page, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    page = add_text_fallbacks(page, widget_texts(nb))
    # The renderer loads its icon fonts from window.__jupyter_widgets_assets_path__, else from an
    # unversioned CDN path: point it at the same pinned release (or the vendored copy).
    page = page.replace("</head>", f'<script>window.__jupyter_widgets_assets_path__ = "{assets_url}";</script>\n'
                                   f"<style>{ICON_FALLBACK_CSS}</style>\n</head>", 1)
    has_views = any(o.get("data", {}).get("application/vnd.jupyter.widget-view+json")
                    for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    if has_views and WIDGET_STATE_TAG not in page:
        raise SystemExit(f"{path}: shows widgets but has no saved widget state; "
                         f"run `python tools/execute_notebooks.py {path}` first")
    problems = check_pinned(page)
    if problems:
        raise SystemExit(f"{path}: " + "; ".join(problems))
    return page


def _title(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def _index(pages: list[tuple[str, str]], vendored: bool) -> str:
    items = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(title)}</a></li>' for href, title in pages)
    offline = ("The widget renderer, MathJax and their fonts are bundled in <code>_static/</code>: the pages work offline."
               if vendored else "The interactive explorers and the math load their scripts from CDNs "
               "(jsdelivr, cdnjs) when a page is opened; offline, text and figures still show, math as TeX "
               "source and each explorer as a line of text.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cfginv-lite course</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;line-height:1.5;padding:0 1rem}}</style>
</head><body>
<h1>cfginv-lite: inverting images into diffusion noise at high guidance</h1>
<p>Static rendering of the course notebooks with their saved outputs. The step explorers work in
the page: move their sliders, no kernel needed. To run the code, open the notebooks in JupyterLab
(see the README's quick start).</p>
<ol>
{items}
</ol>
<p><small>{offline} Widget renderer: @jupyter-widgets/html-manager@{HTML_MANAGER_VERSION}.</small></p>
</body></html>
"""


class _Output:
    """The output folder, written only where this script wrote before (``.build_html.json``)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.manifest = out / MANIFEST
        self.owned: set[str] = set()
        if self.manifest.exists():
            self.owned = set(json.loads(self.manifest.read_text())["files"])
        self.written: set[str] = set()

    def write(self, rel: str, data: str | bytes) -> None:
        target = self.out / rel
        if target.exists() and rel not in self.owned:
            raise SystemExit(f"refusing to overwrite {target}: tools/build_html.py did not create it "
                             f"(choose another --out or remove it)")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data, encoding="utf-8")
        self.written.add(rel)
        self.owned.add(rel)

    def save(self) -> None:
        self.manifest.write_text(json.dumps({"files": sorted(self.owned)}, indent=1) + "\n")


def npm_cache() -> Path:
    import os

    return Path(os.environ.get("CFGINV_NPM_CACHE", Path.home() / ".cache" / "cfginv-lite" / "npm"))


def tarball_name(spec: str) -> str:
    """The file name ``npm pack SPEC`` writes: ``@scope/name@1.2.3`` -> ``scope-name-1.2.3.tgz``."""
    name, version = spec.rsplit("@", 1)
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def fetch_tarballs(source: Path | None = None) -> dict[str, Path]:
    """The three pinned npm tarballs: from ``source`` (offline), else the cache, else ``npm pack``."""
    found = {}
    folder = source if source is not None else npm_cache()
    for key, spec in NPM_PACKAGES.items():
        tgz = folder / tarball_name(spec)
        if not tgz.exists():
            if source is not None:
                raise SystemExit(f"--vendor-from {source}: {tgz.name} is missing (npm pack {spec})")
            folder.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(["npm", "pack", spec, "--silent"], cwd=folder, capture_output=True, text=True)
            if done.returncode != 0 or not tgz.exists():
                raise SystemExit(f"npm pack {spec} failed (network? npm?): {done.stderr.strip()[-500:]}")
        found[key] = tgz
    return found


def _mathjax_wanted(rel: str) -> bool:
    return any(rel == f or (f.endswith("/") and rel.startswith(f)) for f in MATHJAX_FILES) \
        and not rel.startswith(MATHJAX_SKIP)


def vendor(output: _Output, source: Path | None = None) -> tuple[str, str, str]:
    """Copy the pinned html-manager (with its fonts), require.js and MathJax into ``_static/``.

    Returns the renderer, require.js and MathJax URLs, relative to the pages.
    """
    static = f"_static/html-manager-{HTML_MANAGER_VERSION}"
    mathjax = f"_static/mathjax/{MATHJAX_VERSION}"
    tarballs = fetch_tarballs(source)
    for key, tgz in tarballs.items():
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                name = member.name
                if not member.isfile() or not name.startswith("package/"):
                    continue
                rel = name[len("package/"):]
                if key == "html-manager":
                    if not rel.startswith("dist/") or rel.endswith((".map", ".LICENSE.txt")) \
                            or Path(rel).name in ("embed.js", "libembed-amd.js"):
                        continue
                    output.write(f"{static}/{Path(rel).name}", tar.extractfile(member).read())
                elif key == "requirejs" and rel == "require.js":
                    output.write(f"_static/require-{REQUIREJS_VERSION}.js", tar.extractfile(member).read())
                elif key == "mathjax" and _mathjax_wanted(rel):
                    output.write(f"{mathjax}/{rel}", tar.extractfile(member).read())
    missing = [p for p in (f"{static}/embed-amd.js", f"_static/require-{REQUIREJS_VERSION}.js", f"{mathjax}/MathJax.js")
               if p not in output.written]
    if missing:
        raise SystemExit(f"the npm tarballs lack {missing}")
    return (f"{static}/embed-amd.js", f"_static/require-{REQUIREJS_VERSION}.js",
            f"{mathjax}/MathJax.js?config={MATHJAX_CONFIG}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "site", help="output folder (default site/)")
    parser.add_argument("--vendor", action="store_true",
                        help="bundle the widget renderer, require.js, MathJax and their fonts (from npm) so the "
                             "pages work offline")
    parser.add_argument("--vendor-from", type=Path, metavar="DIR",
                        help="with --vendor: take the npm tarballs from DIR (npm pack " + ", ".join(NPM_PACKAGES.values())
                             + ") instead of the cache or the registry")
    args = parser.parse_args(argv)
    if args.vendor_from is not None and not args.vendor:
        parser.error("--vendor-from needs --vendor")
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not notebooks:
        parser.error("no notebooks")
    out = args.out
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        parser.error(f"{out} exists and was not made by this script; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    output = _Output(out)
    renderer, require, mathjax = html_manager_url(), REQUIRE_JS_URL, MATHJAX_URL
    try:
        if args.vendor:
            renderer, require, mathjax = vendor(output, args.vendor_from)
        assets = renderer.rsplit("/", 1)[0] + "/"
        pages = []
        for path in notebooks:
            page = export(path, renderer_url=renderer, require_url=require, assets_url=assets, mathjax_url=mathjax)
            output.write(f"{path.stem}.html", page)
            pages.append((f"{path.stem}.html", _title(path)))
            state = "with widget state" if WIDGET_STATE_TAG in page else "no widgets"
            print(f"{out / (path.stem + '.html')}: {len(page) / 1024:.0f} kB, {state}")
        output.write("index.html", _index(pages, args.vendor))
    finally:
        output.save()
    print(f"{out / 'index.html'} (widget renderer: {renderer})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
