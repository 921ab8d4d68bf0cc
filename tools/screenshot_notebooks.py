#!/usr/bin/env python
"""Screenshot the course's widgets in a real (headless) browser: JupyterLab and the static HTML.

Usage (one command; the notebooks must be saved with outputs and widget state)::

    pip install -e ".[docs]"     # jupyterlab, nbconvert, playwright; plus a Chromium:
                                 # apt-get install chromium  (or: python -m playwright install chromium)
    python tools/screenshot_notebooks.py notebooks/04_tless.ipynb --out docs/screenshots

For every notebook it writes, into ``--out``:

* ``<name>-lab-kernel.png``: JupyterLab 4 with a kernel started, the notebook *trusted*, no
  cell run: the saved widget as a learner first sees it (scrolled to the widget cell);
* ``<name>-lab-kernel-scrubbed.png``: the same after pressing the right arrow on the slider
  (the view runs in the browser), to check that nothing moves while scrubbing;
* ``<name>-lab-untrusted.png``: the same notebook untrusted (JupyterLab shows the text repr);
* ``<name>-html.png``: the page built by ``tools/build_html.py --vendor`` (served locally, so
  no CDN is needed: --vendor bundles the widget renderer and MathJax with its fonts).

It also prints, per view, what it measured: whether the widget rendered, how many red
"disconnected" icons are visible, and whether the curve panel moved while scrubbing.

Nothing in the repository is modified: the notebooks are copied to a temporary folder, which is
the JupyterLab root; trust, settings and workspaces live in temporary Jupyter folders too. The
kernels import the package from this checkout (its root is put first on ``PYTHONPATH``).
Chromium is found at ``--browser`` (default: ``/usr/bin/chromium`` if present, else
Playwright's own).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
#: The widget to scroll to: the step explorer, else the first widget box in an output.
DEFAULT_SELECTOR = ".cfginv-step-explorer"
FALLBACK_SELECTOR = ".jp-OutputArea-output .widget-vbox"

_COUNT_ICONS_JS = """(root) => {
  const scope = root || document;
  const els = [...scope.querySelectorAll('.jupyter-widgets-disconnected')];
  if (root && root.classList.contains('jupyter-widgets-disconnected')) els.push(root);
  return els.filter(e => {
    if (!e.getClientRects().length || getComputedStyle(e).visibility === 'hidden') return false;  // not shown
    const s = getComputedStyle(e, '::before');
    return s.display !== 'none' && s.content && s.content !== 'none' && s.content !== 'normal';
  }).length;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


@contextlib.contextmanager
def jupyterlab(root: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """A token-less JupyterLab server on localhost serving ``root``; yields its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
           f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/api/status", 90)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on localhost (fonts and scripts load as they would online)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def _lab_settings(settings_dir: Path) -> None:
    """No news/update toasts; all cells rendered (no windowing), so scrolling finds the widget."""
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for rel, value in files.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def _widget(page: Any, selector: str, timeout_ms: int) -> Any:
    loc = page.locator(selector).first
    try:
        loc.wait_for(state="visible", timeout=timeout_ms)
        return loc
    except Exception:
        fallback = page.locator(FALLBACK_SELECTOR).first
        fallback.wait_for(state="visible", timeout=5_000)
        return fallback


def _shoot_cell(page: Any, target: Any, path: Path) -> None:
    cell = page.locator(".jp-Cell", has=target).last
    cell.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    cell.screenshot(path=str(path))


def _scrub(page: Any, widget: Any, presses: int = 7) -> dict[str, Any]:
    """Press the right arrow on the widget's slider; did the caption change, did the curve move?"""
    handle = widget.locator(".noUi-handle, .widget-slider input, [role=slider]").first
    if not handle.count():
        return {}
    curve = widget.locator(".widget-image").last
    caption = lambda: widget.locator(".widget-html-content").first.inner_text()  # noqa: E731
    before, text_before = curve.bounding_box(), caption()
    handle.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(120)
    page.wait_for_timeout(500)
    after = curve.bounding_box()
    moved = None if before is None or after is None else abs(after["x"] - before["x"]) + abs(after["y"] - before["y"])
    return {"slider_changes_frame": caption() != text_before, "curve_panel_moved_px": moved}


def lab_views(browser: Any, base: str, rel_trusted: str, rel_untrusted: str, name: str, out: Path,
              selector: str, timeout_ms: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    page.goto(f"{base}/doc/tree/{rel_trusted}")
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout_ms)
    try:
        widget = _widget(page, selector, timeout_ms)
    except Exception:
        shot = out / f"{name}-lab-kernel-FAILED.png"
        page.screenshot(path=str(shot), full_page=False)
        report["lab-kernel"] = {"rendered": False, "screenshot": str(shot)}
        page.close()
        return report
    page.wait_for_timeout(1500)  # images decode, layout settles
    shot = out / f"{name}-lab-kernel.png"
    _shoot_cell(page, widget, shot)
    icons = widget.evaluate(_COUNT_ICONS_JS)
    icons_page = page.evaluate(_COUNT_ICONS_JS, None)
    progress = page.locator(".jp-OutputArea-output .widget-hprogress:visible").first
    progress_shot = None
    if progress.count():
        progress_shot = out / f"{name}-lab-kernel-progress.png"
        area = page.locator(".jp-OutputArea", has=progress).first
        area.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        box = area.bounding_box()
        page.screenshot(path=str(progress_shot), clip={"x": box["x"], "y": box["y"], "width": box["width"],
                                                       "height": min(box["height"], 260)})
        widget.scroll_into_view_if_needed()
    scrub = _scrub(page, widget)
    if scrub:
        _shoot_cell(page, widget, out / f"{name}-lab-kernel-scrubbed.png")
    report["lab-kernel"] = {"rendered": True, "visible_disconnected_icons_in_widget": icons,
                            "visible_disconnected_icons_on_page": icons_page, **scrub, "screenshot": str(shot),
                            "progress_screenshot": progress_shot and str(progress_shot)}
    page.close()

    page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    page.goto(f"{base}/doc/tree/{rel_untrusted}")
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout_ms)
    text = page.locator(".jp-OutputArea-output", has_text="StepExplorer(").last
    shot = out / f"{name}-lab-untrusted.png"
    try:
        text.wait_for(timeout=timeout_ms)
    except Exception:
        pass
    if text.count():
        _shoot_cell(page, text, shot)
        report["lab-untrusted"] = {"shows_text_repr": True, "screenshot": str(shot)}
    else:
        page.screenshot(path=str(shot))
        report["lab-untrusted"] = {"shows_text_repr": False, "screenshot": str(shot)}
    page.close()
    return report


def html_view(browser: Any, base: str, name: str, out: Path, selector: str, timeout_ms: int) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/{name}.html")
    shot = out / f"{name}-html.png"
    loc = page.locator(selector).first
    try:
        loc.wait_for(state="visible", timeout=timeout_ms)
    except Exception:
        page.screenshot(path=str(shot))
        page.close()
        return {"html": {"rendered": False, "errors": errors[:3], "screenshot": str(shot)}}
    page.wait_for_timeout(1500)
    loc.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    loc.screenshot(path=str(shot))
    icons = page.evaluate(_COUNT_ICONS_JS, None)
    scrub = _scrub(page, loc)
    if scrub:
        loc.screenshot(path=str(out / f"{name}-html-scrubbed.png"))
    page.close()
    return {"html": {"rendered": True, "visible_disconnected_icons_on_page": icons, **scrub, "errors": errors[:3],
                     "screenshot": str(shot)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--selector", default=DEFAULT_SELECTOR, help="CSS selector of the widget to shoot")
    parser.add_argument("--browser", default="/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    parser.add_argument("--timeout", type=int, default=120, help="seconds to wait for JupyterLab and widgets")
    parser.add_argument("--no-html", action="store_true", help="skip the static HTML view")
    args = parser.parse_args(argv)

    from jupyter_core.paths import jupyter_path
    from playwright.sync_api import sync_playwright

    from normalize_notebooks import normalize
    import nbformat
    from nbformat.sign import NotebookNotary

    if not any((Path(d) / "@jupyter-widgets" / "jupyterlab-manager").is_dir() for d in jupyter_path("labextensions")):
        parser.error("JupyterLab's widget extension (jupyterlab_widgets) is not installed where this Python's "
                     "JupyterLab looks: pip install -e '.[lab]' into the same environment")
    args.out.mkdir(parents=True, exist_ok=True)
    timeout_ms = args.timeout * 1000
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nb-shots-") as tmp_s:
        tmp = Path(tmp_s)
        root, jdata, jconf, settings = tmp / "root", tmp / "data", tmp / "config", tmp / "settings"
        for d in (root / "trusted", root / "untrusted", jdata, jconf):
            d.mkdir(parents=True)
        _lab_settings(settings)
        env = {**os.environ, "JUPYTER_DATA_DIR": str(jdata), "JUPYTER_CONFIG_DIR": str(jconf),
               "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        # Trust lives in the (temporary) data dir's signature database, as `jupyter trust` does.
        notary = NotebookNotary(data_dir=str(jdata))
        for path in args.notebooks:
            nb = nbformat.read(path, as_version=4)
            normalize(nb)
            # Trust is by content hash: the untrusted copy must differ from the signed one.
            untrusted = nbformat.from_dict(json.loads(json.dumps(nb)))
            untrusted.metadata["screenshot_copy"] = "untrusted"
            nbformat.write(untrusted, root / "untrusted" / path.name)
            notary.sign(nb)
            nbformat.write(nb, root / "trusted" / path.name)
        notary.store.close()

        html_dir = tmp / "html"
        if not args.no_html:
            subprocess.run([sys.executable, str(ROOT / "tools" / "build_html.py"), "--vendor", "--out", str(html_dir),
                            *[str(root / "trusted" / p.name) for p in args.notebooks]], check=True, env=env)

        with jupyterlab(root, env, tmp / "lab.log") as base, sync_playwright() as pw:
            launch: dict[str, Any] = {"args": ["--no-sandbox", "--disable-gpu"]}
            if args.browser:
                launch["executable_path"] = args.browser
            browser = pw.chromium.launch(**launch)
            try:
                for path in args.notebooks:
                    name = path.stem
                    report[name] = lab_views(browser, base, f"trusted/{path.name}", f"untrusted/{path.name}",
                                             name, args.out, args.selector, timeout_ms)
                    if not args.no_html:
                        with static_server(html_dir) as hbase:
                            report[name].update(html_view(browser, hbase, name, args.out, args.selector, timeout_ms))
            finally:
                browser.close()
        if any(not v.get("rendered", v.get("shows_text_repr", True))
               for r in report.values() for v in r.values()):
            shutil.copy(tmp / "lab.log", args.out / "jupyterlab.log")
    print(json.dumps(report, indent=1))
    ok = all(v.get("rendered", True) for r in report.values() for v in r.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
