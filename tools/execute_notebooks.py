#!/usr/bin/env python
"""Execute notebooks in place, saving their outputs and widget state, and report their cost.

Usage::

    python tools/execute_notebooks.py notebooks/01_*.ipynb
    python tools/execute_notebooks.py --timeout 600 notebooks/*.ipynb
    python tools/execute_notebooks.py --binder notebooks/*.ipynb   # as on Binder; writes nothing

Every notebook written is first given a kernelspec and language_info
(``tools/normalize_notebooks.py``), so it opens unmodified in JupyterLab.

``--binder`` runs each notebook as a Binder pod would: on one CPU (the kernel is pinned to one
core, as ``taskset -c 0`` does, with ``OMP_NUM_THREADS=1``, so ``torch.get_num_threads()`` is 1)
and under a 2 GB memory limit, and prints wall time and peak memory per notebook, then a
Markdown table. The limit is enforced with a cgroup (v1 ``memory.limit_in_bytes`` or v2
``memory.max``) when this process may create one (root in a container, or a delegated
cgroup); the kernel is then OOM-killed, as on Binder, if the notebook needs more. Otherwise it
falls back to ``RLIMIT_AS`` (``ulimit -v``), which limits *virtual* memory: PyTorch maps far
more address space than it touches, so that fallback can fail notebooks that would fit; use
``--memory-limit-mode none`` to only measure. The notebooks are executed into copies in a
temporary folder (``--output-dir`` to keep them, ``--write`` to overwrite the originals).

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
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CWD = ROOT / "notebooks"
_RESULT_TAG = "__execute_notebooks_result__ "
BINDER_MEMORY_MB = 2048  # mybinder.org's guaranteed memory per user pod
BINDER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _peak_children_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def execute_one(path: Path, *, timeout: int, kernel: str, cwd: Path,
                output: Path | None = None) -> dict[str, object]:
    """Execute ``path`` (this process starts the kernel) and save it to ``output`` (default: in
    place); returns timing and memory."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from normalize_notebooks import normalize

    output = path if output is None else output
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
    except Exception as exc:  # CellExecutionError, DeadKernelError (e.g. killed by a memory limit), timeouts
        lines = [l for l in str(exc).strip().splitlines() if l.strip() and not l.startswith("---")]
        error = (lines[-1] if lines else "") or type(exc).__name__
        if not isinstance(exc, CellExecutionError):
            error = f"{type(exc).__name__}: {error}"
        failed = Path(tempfile.gettempdir()) / f"{path.stem}.failed.ipynb"
        nbformat.write(nb, failed)  # keep the partial run for inspection; the original is untouched
        error += f" (partial run saved to {failed})"
    wall = time.perf_counter() - start
    if error is None:
        normalize(nb)
        collapse_finished_progress_bars(nb)
        nbformat.validate(nb)
        nbformat.write(nb, output)
    return {
        "notebook": str(path),
        "output": str(output) if error is None else None,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(_peak_children_mb(), 1),
        "size_kb": round((output if error is None else path).stat().st_size / 1024, 1),
        "error": error,
    }


def collapse_finished_progress_bars(nb: dict) -> int:
    """Finished tqdm bars in a saved notebook: no blank gap, and their final text as text/plain.

    ``tqdm.auto`` in a notebook is an HBox (HTML, FloatProgress, HTML). When a bar with
    ``leave=False`` (the package's solvers) finishes, tqdm hides it with
    ``layout.visibility = "hidden"``, which keeps its height: in the saved widget state this
    adds ``display: none``, so a reopened notebook shows no gap (and no "disconnected" icon)
    where the bars were. The bar's text/plain, which renderers without widgets show (an
    untrusted notebook, GitHub), is its *first* state ("0%| 0/20"); it becomes the final one
    ("100%|██████████| 20/20 [00:02<00:00, 9.8it/s]"). nbval compares both through the
    sanitiser's progress-bar pattern. Returns the number of bars changed.
    """
    import html as html_lib

    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    ref = "IPY_MODEL_"

    def model(ref_id: object) -> dict:
        return models.get(str(ref_id)[len(ref):], {})

    final_text: dict[str, str] = {}
    for model_id, box in models.items():
        if box.get("model_name") != "HBoxModel":
            continue
        children = [model(c) for c in box["state"].get("children", [])]
        if [c.get("model_name") for c in children] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
            continue
        layout = model(box["state"].get("layout")).get("state")
        if layout is not None and layout.get("visibility") == "hidden":
            layout["display"] = "none"
        left, bar, right = (str(c.get("state", {}).get("value", "")) for c in children)
        bar_state = children[1].get("state", {})
        value, total = float(bar_state.get("value", 0.0)), float(bar_state.get("max", 100.0))
        if total > 0 and value >= total:  # tqdm's last text refresh may lag the count: show the end
            left = re.sub(r"\s*\d+%$", " 100%", left.replace("\u2007", " ").rstrip())
            right = re.sub(r"^(\W*)\d+/", rf"\g<1>{total:.0f}/", right)
        filled = min(10, int(10 * value / total)) if total > 0 else 0
        text = f"{left}|{'█' * filled}{' ' * (10 - filled)}|{right}" if right else left
        final_text[model_id] = html_lib.unescape(text).replace("\u2007", " ")
    changed = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view and view.get("model_id") in final_text:
                output["data"]["text/plain"] = final_text[view["model_id"]]
                changed += 1
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    parser.add_argument("--kernel", default="python3", help="kernel name (default python3)")
    parser.add_argument("--cwd", type=Path, default=DEFAULT_CWD, help="working directory of the kernel")
    parser.add_argument("--in-process", action="store_true",
                        help="run in this process (peak memory then covers all notebooks so far)")
    binder = parser.add_argument_group("Binder mode")
    binder.add_argument("--binder", action="store_true",
                        help="one CPU and a 2 GB memory limit per notebook, like a Binder pod; "
                             "executes into copies unless --write")
    binder.add_argument("--memory-mb", type=int, default=BINDER_MEMORY_MB,
                        help=f"memory limit in --binder mode (default {BINDER_MEMORY_MB})")
    binder.add_argument("--memory-limit-mode", choices=["auto", "cgroup", "rlimit", "none"], default="auto",
                        help="how --binder enforces the limit: a cgroup if possible (auto), "
                             "RLIMIT_AS on virtual memory, or none (measure only)")
    binder.add_argument("--output-dir", type=Path, help="save executed notebooks here instead of in place")
    binder.add_argument("--write", action="store_true", help="--binder: overwrite the notebooks themselves")
    args = parser.parse_args(argv)

    missing = [p for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook(s): {', '.join(map(str, missing))}")
    if args.binder and args.in_process:
        parser.error("--binder runs every notebook in its own limited child process; drop --in-process")
    if args.write and args.output_dir:
        parser.error("--write and --output-dir exclude each other")

    tmp = None
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        out_dir = args.output_dir
    elif args.binder and not args.write:
        tmp = out_dir = Path(tempfile.mkdtemp(prefix="binder-run-"))
    else:
        out_dir = None
    if args.binder:
        mode = _limit_mode(args.memory_limit_mode)
        print(f"Binder mode: 1 CPU (affinity {{{_one_cpu()}}}, OMP_NUM_THREADS=1), memory limit "
              f"{args.memory_mb} MB enforced by {mode}; outputs to {out_dir or 'the notebooks (--write)'}",
              flush=True)
        if mode == "rlimit":
            print("  note: RLIMIT_AS limits virtual memory, which PyTorch exceeds well below its resident "
                  "size; a failure here may not be a failure on Binder (--memory-limit-mode none to measure)",
                  flush=True)

    failures, results = 0, []
    try:
        for path in args.notebooks:
            output = None if out_dir is None else out_dir / path.name
            if args.in_process:
                result = execute_one(path, timeout=args.timeout, kernel=args.kernel, cwd=args.cwd, output=output)
            else:
                result = _execute_in_child(path, args, output)
            status = "ok" if not result["error"] else f"FAILED: {result['error']}"
            extra = ""
            if result.get("cgroup_peak_mb") is not None:
                extra = f", cgroup peak {result['cgroup_peak_mb']:.0f} MB incl. page cache"
            print(f"{result['notebook']}: {result['wall_s']:.1f} s, peak kernel RSS "
                  f"{result['peak_rss_mb']:.0f} MB{extra}, {result['size_kb']:.0f} kB  {status}", flush=True)
            results.append(result)
            failures += bool(result["error"])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.binder:
        print(f"\n| notebook | wall time, 1 CPU | peak kernel memory | within {args.memory_mb} MB |")
        print("|---|---|---|---|")
        for r in results:
            ok = "killed (out of memory)" if r.get("oom_killed") else ("yes" if not r["error"] else "failed")
            print(f"| {Path(r['notebook']).name} | {r['wall_s']:.0f} s | {r['peak_rss_mb']:.0f} MB | {ok} |")
    return 1 if failures else 0


# --------------------------------------------------------------------------- Binder limits
def _one_cpu() -> int:
    """The first CPU this process may run on (``taskset -c`` with one CPU)."""
    return min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0


def _own_cgroup() -> tuple[str, Path] | None:
    """``("v1" | "v2", directory)`` of this process's memory cgroup, if one is writable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            d = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
            if (d / "memory.limit_in_bytes").exists() and os.access(d, os.W_OK):
                return "v1", d
    for line in lines:
        if line.startswith("0::"):
            d = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
            if "memory" in (d / "cgroup.subtree_control").read_text(errors="ignore").split() \
                    and os.access(d, os.W_OK):
                return "v2", d
    return None


def _limit_mode(requested: str) -> str:
    if requested == "auto":
        return "cgroup" if _own_cgroup() else "rlimit"
    if requested == "cgroup" and not _own_cgroup():
        raise SystemExit("no writable memory cgroup here (needs root or a delegated cgroup); "
                         "use --memory-limit-mode rlimit or none")
    return requested


class _MemoryCgroup:
    """A child memory cgroup with a hard limit; processes join it via :meth:`enter` (preexec)."""

    def __init__(self, limit_mb: int) -> None:
        found = _own_cgroup()
        if found is None:
            raise RuntimeError("no writable memory cgroup")
        self.version, parent = found
        self.dir = parent / f"cfginv-binder-{os.getpid()}-{time.monotonic_ns()}"
        self.dir.mkdir()
        limit = str(limit_mb * 1024 * 1024)
        if self.version == "v1":
            (self.dir / "memory.limit_in_bytes").write_text(limit)
            memsw = self.dir / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # no swapping around the limit either
                try:
                    memsw.write_text(limit)
                except OSError:
                    pass
        else:
            (self.dir / "memory.max").write_text(limit)
            if (self.dir / "memory.swap.max").exists():
                (self.dir / "memory.swap.max").write_text("0")

    def enter(self) -> None:
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mb(self) -> float | None:
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        try:
            return int((self.dir / name).read_text()) / 2**20
        except (OSError, ValueError):
            return None

    def oom_killed(self) -> bool:
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        try:
            fields = dict(l.split() for l in (self.dir / name).read_text().splitlines() if len(l.split()) == 2)
        except OSError:
            return False
        return int(fields.get("oom_kill", 0)) > 0

    def remove(self) -> None:
        for _ in range(50):  # the reaped processes leave the cgroup asynchronously
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _execute_in_child(path: Path, args: argparse.Namespace, output: Path | None) -> dict[str, object]:
    """Run one notebook in a fresh interpreter so ``RUSAGE_CHILDREN`` covers only its kernel.

    In ``--binder`` mode that interpreter, and so the kernel it starts, runs on one CPU with one
    OpenMP thread and inside a memory cgroup (or under ``RLIMIT_AS``)."""
    cmd = [sys.executable, __file__, "--_one", str(path), "--timeout", str(args.timeout),
           "--kernel", args.kernel, "--cwd", str(args.cwd)]
    if output is not None:
        cmd += ["--_output", str(output)]
    env, cgroup, preexec = None, None, None
    if args.binder:
        env = {**os.environ, **BINDER_ENV}
        mode = _limit_mode(args.memory_limit_mode)
        cpu = _one_cpu()
        if mode == "cgroup":
            cgroup = _MemoryCgroup(args.memory_mb)
        limit = args.memory_mb * 1024 * 1024

        def preexec() -> None:  # runs in the child between fork and exec
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {cpu})
            if cgroup is not None:
                cgroup.enter()
            elif mode == "rlimit":
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=preexec)
        result = None
        for line in proc.stdout.splitlines():
            if line.startswith(_RESULT_TAG):
                result = json.loads(line[len(_RESULT_TAG):])
        if result is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            result = {"notebook": str(path), "output": None, "wall_s": float("nan"), "peak_rss_mb": float("nan"),
                      "size_kb": path.stat().st_size / 1024, "error": tail[0]}
        if cgroup is not None:
            result["cgroup_peak_mb"] = cgroup.peak_mb()
            result["oom_killed"] = cgroup.oom_killed()
            if result["oom_killed"] and result["error"]:
                result["error"] = f"killed by the {args.memory_mb} MB memory limit ({result['error']})"
        return result
    finally:
        if cgroup is not None:
            cgroup.remove()


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--_one", dest="one", type=Path, required=True)
    parser.add_argument("--_output", dest="output", type=Path, default=None)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--cwd", type=Path, default=DEFAULT_CWD)
    args = parser.parse_args(argv)
    result = execute_one(args.one, timeout=args.timeout, kernel=args.kernel, cwd=args.cwd, output=args.output)
    print(_RESULT_TAG + json.dumps(result), flush=True)
    return 1 if result["error"] else 0


if __name__ == "__main__":
    if "--_one" in sys.argv[1:]:
        sys.exit(_child(sys.argv[1:]))
    sys.exit(main())
