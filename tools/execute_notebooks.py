#!/usr/bin/env python
"""Execute notebooks in place, saving their outputs and widget state, and report their cost.

Usage::

    python tools/execute_notebooks.py notebooks/01_*.ipynb
    python tools/execute_notebooks.py --timeout 600 notebooks/*.ipynb

Each notebook runs with nbclient (kernel ``python3``, working directory ``notebooks/`` unless
``--cwd`` says otherwise) and is written back with its outputs and, in
``metadata.widgets``, the widget state (``store_widget_state=True``), without which GitHub and
nbviewer cannot render widgets. Cell timing metadata is not recorded, so re-running a notebook
only changes what actually changed.

Every notebook runs in a fresh child process, so the peak memory reported is that notebook's
own kernel: after the kernel is shut down and reaped, ``getrusage(RUSAGE_CHILDREN).ru_maxrss``
of that child process is the largest resident set of any process it started (stdlib only).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CWD = ROOT / "notebooks"
_RESULT_TAG = "__execute_notebooks_result__ "


def _peak_children_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def execute_one(path: Path, *, timeout: int, kernel: str, cwd: Path) -> dict[str, object]:
    """Execute ``path`` in place (this process starts the kernel); returns timing and memory."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        resources={"metadata": {"path": str(cwd)}},
        store_widget_state=True,
        record_timing=False,  # no per-cell timestamps: keeps diffs to real changes
    )
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        lines = [l for l in str(exc).strip().splitlines() if l.strip() and not l.startswith("---")]
        error = lines[-1] if lines else type(exc).__name__
        failed = Path(tempfile.gettempdir()) / f"{path.stem}.failed.ipynb"
        nbformat.write(nb, failed)  # keep the partial run for inspection; the original is untouched
        error += f" (partial run saved to {failed})"
    wall = time.perf_counter() - start
    if error is None:
        nbformat.validate(nb)
        nbformat.write(nb, path)
    return {
        "notebook": str(path),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(_peak_children_mb(), 1),
        "size_kb": round(path.stat().st_size / 1024, 1),
        "error": error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    parser.add_argument("--kernel", default="python3", help="kernel name (default python3)")
    parser.add_argument("--cwd", type=Path, default=DEFAULT_CWD, help="working directory of the kernel")
    parser.add_argument("--in-process", action="store_true",
                        help="run in this process (peak memory then covers all notebooks so far)")
    args = parser.parse_args(argv)

    missing = [p for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook(s): {', '.join(map(str, missing))}")

    failures = 0
    for path in args.notebooks:
        if args.in_process:
            result = execute_one(path, timeout=args.timeout, kernel=args.kernel, cwd=args.cwd)
        else:
            result = _execute_in_child(path, args)
        status = "ok" if not result["error"] else f"FAILED: {result['error']}"
        print(f"{result['notebook']}: {result['wall_s']:.1f} s, peak kernel RSS "
              f"{result['peak_rss_mb']:.0f} MB, {result['size_kb']:.0f} kB  {status}", flush=True)
        failures += bool(result["error"])
    return 1 if failures else 0


def _execute_in_child(path: Path, args: argparse.Namespace) -> dict[str, object]:
    """Run one notebook in a fresh interpreter so ``RUSAGE_CHILDREN`` covers only its kernel."""
    cmd = [sys.executable, __file__, "--_one", str(path), "--timeout", str(args.timeout),
           "--kernel", args.kernel, "--cwd", str(args.cwd)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"notebook": str(path), "wall_s": float("nan"), "peak_rss_mb": float("nan"),
            "size_kb": path.stat().st_size / 1024, "error": tail[0]}


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--_one", dest="one", type=Path, required=True)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--cwd", type=Path, default=DEFAULT_CWD)
    args = parser.parse_args(argv)
    result = execute_one(args.one, timeout=args.timeout, kernel=args.kernel, cwd=args.cwd)
    print(_RESULT_TAG + json.dumps(result), flush=True)
    return 1 if result["error"] else 0


if __name__ == "__main__":
    if "--_one" in sys.argv[1:]:
        sys.exit(_child(sys.argv[1:]))
    sys.exit(main())
