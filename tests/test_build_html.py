"""tools/build_html.py: the static course page embeds the widget state and pins its scripts."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbconvert")
nbformat = pytest.importorskip("nbformat")
ipywidgets = pytest.importorskip("ipywidgets")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_html  # noqa: E402


def _notebook_with_a_widget(path: Path) -> str:
    """A saved notebook as tools/execute_notebooks.py writes it: a widget view and its state."""
    from ipywidgets.embed import dependency_state

    slider = ipywidgets.IntSlider(value=3, max=19, description="step")
    shown = ipywidgets.VBox([slider, ipywidgets.HTML("<b>frame</b>")])
    ipywidgets.jslink((slider, "value"), (ipywidgets.Play(max=19), "value"))
    state = dependency_state([shown], drop_defaults=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json":
                              {"state": state, "version_major": 2, "version_minor": 0}}
    view = {"model_id": shown.model_id, "version_major": 2, "version_minor": 0}
    nb.cells = [nbformat.v4.new_markdown_cell("# A tiny course page\n\nThe update $x_{t+1} = f(x_t)$."),
                nbformat.v4.new_code_cell("explorer", execution_count=1, outputs=[nbformat.v4.new_output(
                    "display_data", data={"application/vnd.jupyter.widget-view+json": view,
                                          "text/plain": "VBox(...)"})])]
    nbformat.write(nb, path)
    return shown.model_id


def test_html_embeds_widget_state_and_pins_exact_script_versions(tmp_path: Path) -> None:
    model_id = _notebook_with_a_widget(tmp_path / "tiny.ipynb")
    out = tmp_path / "site"
    assert build_html.main([str(tmp_path / "tiny.ipynb"), "--out", str(out)]) == 0
    page = (out / "tiny.html").read_text(encoding="utf-8")

    state = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">\s*(.*?)\s*</script>', page, re.S)
    assert state, "widget state not embedded"
    models = json.loads(state.group(1))["state"]
    assert model_id in models and any(m["model_name"] == "IntSliderModel" for m in models.values())
    assert model_id in page.split(state.group(0))[0]  # the view that refers to it

    version = build_html.HTML_MANAGER_VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert f"@jupyter-widgets/html-manager@{version}/dist/embed-amd.js" in page
    assert "@*" not in page
    assert "mathjax/2.7.7/" in page and "require.js/2.1.10/" in page  # MathJax is referenced: pinned too
    assert build_html.check_pinned(page) == []
    assert "tiny.html" in (out / "index.html").read_text(encoding="utf-8")


def test_pin_check_rejects_floating_versions() -> None:
    assert build_html.check_pinned("x/@jupyter-widgets/html-manager@*/dist/embed-amd.js")
    assert build_html.check_pinned("x/@jupyter-widgets/html-manager@^1.0.1/dist/embed-amd.js")


def test_build_never_overwrites_files_it_did_not_create(tmp_path: Path) -> None:
    _notebook_with_a_widget(tmp_path / "tiny.ipynb")
    out = tmp_path / "site"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        build_html.main([str(tmp_path / "tiny.ipynb"), "--out", str(out)])
    assert (out / "notes.txt").read_text() == "mine" and not (out / "tiny.html").exists()


# --------------------------------------------------------------------------- offline
def test_widgets_show_their_text_until_the_renderer_draws_them(tmp_path: Path) -> None:
    """Built without --vendor and viewed offline, a widget shows its text/plain repr, not nothing."""
    model_id = _notebook_with_a_widget(tmp_path / "tiny.ipynb")
    out = tmp_path / "site"
    assert build_html.main([str(tmp_path / "tiny.ipynb"), "--out", str(out)]) == 0
    page = (out / "tiny.html").read_text(encoding="utf-8")
    view = re.search(r'<script type="application/vnd\.jupyter\.widget-view\+json">.*?</script>', page, re.S)
    assert view and model_id in view.group(0)
    after = page[view.end():]
    fallback = re.match(r'\s*<pre class="cfginv-widget-fallback" data-model-id="([0-9a-f]+)"[^>]*>(.*?)</pre>', after, re.S)
    assert fallback, after[:300]
    assert fallback.group(1) == model_id and fallback.group(2) == "VBox(...)"
    # the script that hides the text once html-manager has drawn into its div.widget-subarea
    head = page.split("</head>")[0]
    assert "pre.cfginv-widget-fallback" in head and ".widget-subarea *" in head


def test_text_fallback_is_escaped_and_skips_views_without_text() -> None:
    page = ('<head></head><script type="application/vnd.jupyter.widget-view+json">{"model_id": "ab12", "version_major": 2}'
            '</script><script type="application/vnd.jupyter.widget-view+json">{"model_id": "cd34"}</script>')
    out = build_html.add_text_fallbacks(page, {"ab12": "Explorer(<b>1</b> & 2)"})
    assert "Explorer(&lt;b&gt;1&lt;/b&gt; &amp; 2)" in out and out.count("cfginv-widget-fallback\"") == 1
    assert build_html.add_text_fallbacks("<head></head><p>no widgets</p>", {}) == "<head></head><p>no widgets</p>"


def _tarball(path: Path, files: dict[str, bytes]) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _fake_npm_tarballs(folder: Path) -> None:
    """Stand-ins for the three npm packages, laid out as `npm pack` writes them."""
    folder.mkdir()
    specs = build_html.NPM_PACKAGES
    _tarball(folder / build_html.tarball_name(specs["html-manager"]),
             {"dist/embed-amd.js": b"// renderer", "dist/fa-solid-900.woff2": b"font", "dist/embed-amd.js.map": b"{}",
              "dist/embed.js": b"// not the AMD build", "package.json": b"{}"})
    _tarball(folder / build_html.tarball_name(specs["requirejs"]), {"require.js": b"// require", "bin/r.js": b"x"})
    _tarball(folder / build_html.tarball_name(specs["mathjax"]), {
        "MathJax.js": b"// loader", "config/TeX-AMS_CHTML-full.js": b"// config", "config/Safe.js": b"// safe",
        "config/TeX-AMS-MML_SVG.js": b"// another config", "extensions/Safe.js": b"// ext",
        "extensions/a11y/mathmaps/en.json": b"{}", "jax/input/TeX/config.js": b"// tex",
        "jax/output/CommonHTML/fonts/TeX/fontdata.js": b"// data", "jax/output/SVG/jax.js": b"// svg",
        "fonts/HTML-CSS/TeX/woff/MathJax_Main-Regular.woff": b"woff", "fonts/HTML-CSS/TeX/otf/MathJax_Main-Regular.otf": b"otf",
        "fonts/HTML-CSS/TeX/png/x.png": b"png", "unpacked/MathJax.js": b"// unpacked", "localization/de/de.js": b"de"})


def test_tarball_names_follow_npm_pack() -> None:
    assert build_html.tarball_name("@jupyter-widgets/html-manager@1.0.15") == "jupyter-widgets-html-manager-1.0.15.tgz"
    assert build_html.tarball_name("mathjax@2.7.7") == "mathjax-2.7.7.tgz"
    assert build_html.NPM_PACKAGES["mathjax"] == f"mathjax@{build_html.MATHJAX_VERSION}"
    assert f"/mathjax/{build_html.MATHJAX_VERSION}/" in build_html.MATHJAX_URL


def test_vendor_bundles_renderer_mathjax_and_fonts_and_points_pages_at_them(tmp_path: Path) -> None:
    _notebook_with_a_widget(tmp_path / "tiny.ipynb")
    _fake_npm_tarballs(tmp_path / "npm")
    out = tmp_path / "site"
    assert build_html.main([str(tmp_path / "tiny.ipynb"), "--out", str(out), "--vendor",
                            "--vendor-from", str(tmp_path / "npm")]) == 0
    page = (out / "tiny.html").read_text(encoding="utf-8")
    mj = f"_static/mathjax/{build_html.MATHJAX_VERSION}"
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {f"{mj}/MathJax.js", f"{mj}/config/TeX-AMS_CHTML-full.js", f"{mj}/config/Safe.js", f"{mj}/extensions/Safe.js",
            f"{mj}/jax/input/TeX/config.js", f"{mj}/jax/output/CommonHTML/fonts/TeX/fontdata.js",
            f"{mj}/fonts/HTML-CSS/TeX/woff/MathJax_Main-Regular.woff",
            "_static/html-manager-1.0.15/embed-amd.js", "_static/html-manager-1.0.15/fa-solid-900.woff2",
            "_static/require-2.1.10.js"} <= files
    # what the pages never request is left out
    assert not any(f.startswith((f"{mj}/unpacked/", f"{mj}/localization/", f"{mj}/jax/output/SVG/",
                                 f"{mj}/extensions/a11y/")) or f.endswith((".otf", ".png", ".map")) for f in files), files
    # every script the page loads is local: it renders offline
    scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
    assert f"{mj}/MathJax.js?config=TeX-AMS_CHTML-full,Safe" in scripts and "_static/require-2.1.10.js" in scripts
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
    assert "_static/html-manager-1.0.15/embed-amd.js" in page and "cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager" not in page
    assert build_html.check_pinned(page) == []
    assert "work offline" in (out / "index.html").read_text(encoding="utf-8")


def test_vendor_from_a_folder_without_the_tarballs_fails_clearly(tmp_path: Path) -> None:
    _notebook_with_a_widget(tmp_path / "tiny.ipynb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="missing"):
        build_html.main([str(tmp_path / "tiny.ipynb"), "--out", str(tmp_path / "site"), "--vendor",
                         "--vendor-from", str(tmp_path / "empty")])


def test_vendor_with_the_real_npm_packages(tmp_path: Path) -> None:
    """The real tarballs, when a previous `--vendor` build cached them (no download here)."""
    cache = build_html.npm_cache()
    if not all((cache / build_html.tarball_name(s)).exists() for s in build_html.NPM_PACKAGES.values()):
        pytest.skip(f"npm tarballs not cached in {cache} (run `python tools/build_html.py --vendor` once)")
    _notebook_with_a_widget(tmp_path / "tiny.ipynb")
    out = tmp_path / "site"
    assert build_html.main([str(tmp_path / "tiny.ipynb"), "--out", str(out), "--vendor", "--vendor-from", str(cache)]) == 0
    mj = out / "_static" / "mathjax" / build_html.MATHJAX_VERSION
    assert (mj / "MathJax.js").stat().st_size > 10_000
    assert len(list((mj / "fonts" / "HTML-CSS" / "TeX" / "woff").glob("*.woff"))) >= 20
    assert (mj / "jax" / "output" / "CommonHTML" / "jax.js").exists()
    assert sum(p.stat().st_size for p in mj.rglob("*") if p.is_file()) < 4_000_000
