"""How cfginv-lite's tools recognise the files they wrote, so they replace only those.

Each tool leaves a marker in its files and looks for it before replacing one without
``--force``: the command-line tool a first-line comment in Markdown and its name in a
figure's metadata (:func:`is_tool_markdown`, :func:`is_tool_image`); the benchmark scripts
their table's title as the first line (:func:`first_line_is`), their script name under a key
of their JSON (:func:`json_marked`) or a PNG ``Title`` (:func:`png_titled`). A predicate
returns ``False`` for anything it cannot read: an unreadable file is never "ours".
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

#: Marker the command-line tool writes, and looks for before replacing a file without ``--force``.
SOFTWARE = "cfginv-lite compare"
MARKDOWN_MARKER = "<!-- written by cfginv-lite compare (it may replace this file when run again) -->"

_PDF_CREATOR = f"/Creator ({SOFTWARE})".encode()
_SVG_CREATOR = re.compile(r"<dc:creator>\s*<cc:Agent>\s*<dc:title>" + re.escape(SOFTWARE) + r"</dc:title>")


def first_line_is(marker: str) -> Callable[[Path], bool]:
    """A predicate: whether a text file's first line is exactly ``marker``."""
    def owned(path: Path) -> bool:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.readline().rstrip("\r\n") == marker
        except OSError:
            return False
    return owned


def json_marked(value: str, key: str = "written_by",
                legacy: Callable[[dict[str, Any]], bool] | None = None) -> Callable[[Path], bool]:
    """A predicate: whether a file is a JSON object whose ``key`` is ``value`` (or, with no ``key``
    at all, one that ``legacy`` recognises: files written before the marker existed)."""
    def owned(path: Path) -> bool:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict):
            return False
        if key in data:
            return data[key] == value
        return legacy is not None and bool(legacy(data))
    return owned


def png_titled(title: str) -> Callable[[Path], bool]:
    """A predicate: whether a file is a PNG whose ``Title`` text chunk is ``title``."""
    def owned(path: Path) -> bool:
        try:
            from PIL import Image

            with Image.open(path) as img:
                return img.format == "PNG" and img.info.get("Title") == title
        except Exception:  # not an image at all: certainly not ours
            return False
    return owned


def is_tool_markdown(path: Path) -> bool:
    """Whether ``path`` starts with :data:`MARKDOWN_MARKER` (a table the command-line tool wrote)."""
    return first_line_is(MARKDOWN_MARKER)(path)


def is_tool_image(path: Path) -> bool:
    """Whether ``path`` is a figure the command-line tool wrote (:func:`cfginv_lite.presentation.plot_rows`
    with ``software=SOFTWARE``): a PNG whose ``Software`` text chunk, or a PDF or SVG whose creator
    (matplotlib's ``Creator`` metadata) is :data:`SOFTWARE`."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head.startswith(b"%PDF-"):  # matplotlib writes the info dictionary near the end
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 8192))
                return _PDF_CREATOR in fh.read()
            if head.startswith((b"<?xml", b"<svg")):  # matplotlib writes <metadata> right after <svg>
                fh.seek(0)
                return _SVG_CREATOR.search(fh.read(8192).decode("utf-8", "replace")) is not None
        from PIL import Image

        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get("Software") == SOFTWARE
    except Exception:  # not an image at all: certainly not ours
        return False


__all__ = ["MARKDOWN_MARKER", "SOFTWARE", "first_line_is", "is_tool_image", "is_tool_markdown", "json_marked",
           "png_titled"]
