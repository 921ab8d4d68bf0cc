#!/usr/bin/env python
"""Give every notebook a kernelspec and language_info, so it opens unmodified in JupyterLab.

Usage::

    python tools/normalize_notebooks.py notebooks/*.ipynb          # fix in place
    python tools/normalize_notebooks.py --check notebooks/*.ipynb  # exit 1 if any needs fixing

A notebook without ``metadata.kernelspec`` makes JupyterLab pick a kernel and write it into
the notebook as soon as it opens, so closing it asks to save changes the learner never made.
The kernelspec written here is the one ``ipykernel`` installs (``python3``), which exists in
JupyterLab, Binder, Colab and the ``[lab]`` extra's environment. Existing ``language_info``
fields (the Python version the outputs were made with) are kept; missing ones are filled in.

A file is rewritten only when its metadata changes, in the format JupyterLab saves (nbformat,
one-space indent), so re-running this is a no-op. ``tools/execute_notebooks.py`` calls
:func:`normalize` on every notebook it executes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}


def normalize(nb: Any) -> bool:
    """Set ``kernelspec`` and fill ``language_info`` in ``nb.metadata`` in place; True if changed."""
    meta = nb["metadata"]
    before = repr((meta.get("kernelspec"), meta.get("language_info")))
    meta["kernelspec"] = dict(KERNELSPEC)
    info = dict(meta.get("language_info") or {})
    for k, v in LANGUAGE_INFO.items():
        info.setdefault(k, v)
    info.setdefault("version", ".".join(map(str, sys.version_info[:3])))
    meta["language_info"] = info
    return repr((meta.get("kernelspec"), meta.get("language_info"))) != before


def normalize_file(path: Path, *, check: bool = False) -> bool:
    """Normalize one notebook file (unless ``check``); True if it needed it."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = normalize(nb)
    if changed and not check:
        nbformat.validate(nb)
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if any notebook needs fixing")
    args = parser.parse_args(argv)
    needed = [p for p in args.notebooks if normalize_file(p, check=args.check)]
    for p in needed:
        print(f"{p}: {'needs kernelspec/language_info' if args.check else 'normalized'}")
    return 1 if (args.check and needed) else 0


if __name__ == "__main__":
    sys.exit(main())
