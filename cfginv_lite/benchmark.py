"""The harness the benchmark scripts share: safe outputs, atomic saves, ``--resume``, the runs log.

A benchmark keeps only its science; this module does the rest the same way for all of them:

* :func:`add_output_arguments`: the common command line (``--out-dir``, ``--resume``, ``--force``);
* :class:`OutputFile`: one output path, checked before any work
  (:func:`cfginv_lite.outputs.check_output_file`: a new file, or one this script wrote, unless
  ``--force``) and written atomically, the ownership rule checked again at write time
  (:func:`cfginv_lite.outputs.write_output`);
* :class:`Results`: the results JSON and the files rendered from it (Markdown tables, figures).
  Opening it checks every one of them before any work; an existing results file is continued
  only with ``--resume`` (``--force`` starts over), so no run silently discards an earlier one.
  :meth:`Results.done` says what an earlier run finished; :meth:`Results.add` and
  :meth:`Results.commit` save the JSON, then re-render the other files, after every finished
  unit, so an interrupted run keeps everything it finished; :meth:`Results.finish` logs the run;
* :func:`command_line`, :func:`environment`: how a run is recorded.

Errors in paths are :class:`~cfginv_lite.outputs.OutputPathError` (a ``ValueError``); a script
turns them into a one-line message with :func:`exit_on_output_error`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator

from .outputs import OutputConflictError, OutputPathError, check_output_file, write_output
from .ownership import json_marked

#: Writes a rendered file from the results: ``render(state, tmp_path)``.
Render = Callable[[dict[str, Any], Path], None]


def add_output_arguments(parser: argparse.ArgumentParser, files: str | None = None, *, resume: bool = True) -> None:
    """Add ``--out-dir`` (when ``files`` says what goes there), ``--resume`` (when ``resume``) and ``--force``."""
    if files is not None:
        parser.add_argument("--out-dir", default="docs", help=f"folder for {files} (default docs)")
    if resume:
        parser.add_argument("--resume", action="store_true", help="keep the results already in the JSON and run the rest")
    parser.add_argument("--force", action="store_true", help="replace output files this script did not write")


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reproduces this run (``OMP_NUM_THREADS`` included when set)."""
    words = sys.argv if argv is None else [script, *argv]
    command = shlex.join(["python", *words])
    threads = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={threads} {command}" if threads else command


def environment(*, diffusers: bool = False, load: bool = False) -> str:
    """Library versions and machine of this run; ``load`` adds the 1-minute load average."""
    import torch

    libraries = [f"torch {torch.__version__}"]
    if diffusers:
        import diffusers as _diffusers

        libraries.append(f"diffusers {_diffusers.__version__}")
    text = (f"{', '.join(libraries)}, Python {platform.python_version()}, {platform.machine()} CPU, "
            f"nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}")
    return text + (f", 1-min load at start {os.getloadavg()[0]:.2f}" if load else "")


@contextlib.contextmanager
def exit_on_output_error() -> Iterator[None]:
    """Turn a refused output path (before or during the run) into ``SystemExit("error: ...")``."""
    try:
        yield
    except (OutputPathError, OutputConflictError) as err:
        raise SystemExit(f"error: {err}") from None


def text_render(markdown: Callable[[dict[str, Any]], str]) -> Render:
    """A :data:`Render` that writes ``markdown(state)`` as UTF-8 text."""
    return lambda state, tmp: tmp.write_text(markdown(state), encoding="utf-8")


class OutputFile:
    """One output path of a script: checked at construction, written atomically by :meth:`write`."""

    def __init__(self, path: str | os.PathLike[str], *, script: str, owned: Callable[[Path], bool],
                 force: bool = False, what: str = "output file") -> None:
        self.owned, self.force, self.what = owned, force, what
        self.path = check_output_file(path, what=what, force=force, owned=owned, owner=f"this script ({script})")
        self.existed = self.path.exists() or self.path.is_symlink()

    def write(self, writer: Callable[[Path], None]) -> None:
        """``writer(tmp)`` writes the file; it is moved into place only if the path is still free or ours."""
        write_output(self.path, writer, existed=self.existed, force=self.force, owned=self.owned, what=self.what)
        self.existed = True

    def write_text(self, text: str) -> None:
        """Write ``text`` (UTF-8) atomically."""
        self.write(lambda tmp: tmp.write_text(text, encoding="utf-8"))


class Results:
    """A benchmark's results JSON, resumable, saved atomically after every finished unit.

    ``fresh`` is the state a new run starts from (the marker ``{marker: script}`` is added);
    ``keys(state)`` lists the keys of the finished units (for :meth:`done`); ``legacy``
    recognises this script's files from before the marker existed; ``renders`` maps each file
    rendered from the state to ``(owned, render)``; ``indent`` is the JSON's (None: compact).
    With ``always_resume`` an existing file of this script is always continued (the script
    replaces what it re-measures itself); ``resumable=False``: the script has no ``--resume``.
    """

    def __init__(self, path: str | os.PathLike[str], *, script: str, fresh: dict[str, Any],
                 force: bool = False, resume: bool = False, always_resume: bool = False, marker: str = "written_by",
                 keys: Callable[[dict[str, Any]], Iterable[Hashable]] | None = None,
                 legacy: Callable[[dict[str, Any]], bool] | None = None,
                 renders: dict[str | os.PathLike[str], tuple[Callable[[Path], bool], Render]] | None = None,
                 indent: int | None = 1, resumable: bool = True, what: str = "results JSON") -> None:
        owned = json_marked(script, marker, legacy)
        self.file = OutputFile(path, script=script, owned=owned, force=force, what=what)
        self.renders = [(OutputFile(p, script=script, owned=own, force=force, what=f"output {Path(p).name}"), render)
                        for p, (own, render) in (renders or {}).items()]
        self._keys, self.indent = keys, indent
        self.worked = False
        self.resumed = False                    # True when the state was read from an earlier run's file
        self.state: dict[str, Any] = {marker: script, **fresh}
        if self.file.existed and self._continue(script, owned, resume=resume, always_resume=always_resume,
                                                force=force, resumable=resumable):
            self.state, self.resumed = json.loads(self.file.path.read_text(encoding="utf-8")), True
            self.state.setdefault(marker, script)         # files from before the marker get it with the next save
            for key, value in fresh.items():
                self.state.setdefault(key, value)

    def _continue(self, script: str, owned: Callable[[Path], bool], *, resume: bool, always_resume: bool,
                  force: bool, resumable: bool) -> bool:
        """Whether the existing results file is read and continued; refuse what the options do not allow."""
        ours = owned(self.file.path)
        if not (resume or always_resume or force):
            how = "--resume to continue them or --force to start over" if resumable else "--force to replace them"
            raise OutputPathError(f"{str(self.file.path)!r} holds earlier results; pass {how}")
        if resume and not ours:
            raise OutputPathError(f"{str(self.file.path)!r} was not written by this script ({script}); "
                                  "cannot --resume from it")
        return ours and (resume or always_resume)

    @property
    def path(self) -> Path:
        """The results JSON."""
        return self.file.path

    @property
    def rendered(self) -> list[Path]:
        """The files rendered from the results, in the order given."""
        return [out.path for out, _ in self.renders]

    def done(self, key: Hashable) -> bool:
        """Whether ``key`` was finished (by this run or the one resumed)."""
        if self._keys is None:
            raise TypeError("Results(keys=...) was not given: no unit can be looked up")
        return key in set(self._keys(self.state))

    def add(self, *rows: dict[str, Any]) -> None:
        """Append finished ``rows`` to the list ``state["rows"]`` and save at once."""
        table = self.state.setdefault("rows", [])
        if not isinstance(table, list):
            raise TypeError(f"state['rows'] is a {type(table).__name__}, not a list: put results into "
                            "state yourself and call commit()")
        table.extend(rows)
        self.commit()

    def commit(self) -> None:
        """The caller put newly finished results into ``state``: count the run as work and save."""
        self.worked = True
        self.save()

    def save(self) -> None:
        """Write the JSON atomically, then every rendered file (the JSON first: it holds the results)."""
        self.file.write_text(json.dumps(self.state, indent=self.indent) + ("\n" if self.indent is not None else ""))
        for out, render in self.renders:
            out.write(lambda tmp, r=render: r(self.state, tmp))

    def log_run(self, run: dict[str, Any]) -> None:
        """Add ``run`` (command, environment, ...) to ``state["runs"]``; saved with the next save."""
        self.state.setdefault("runs", []).append(run)

    def finish(self, run: dict[str, Any]) -> None:
        """Log ``run`` if it finished anything (a ``--resume`` with nothing left is not a run), and save."""
        if self.worked:
            self.log_run(run)
        self.save()


__all__ = ["OutputFile", "Render", "Results", "add_output_arguments", "command_line", "environment",
           "exit_on_output_error", "text_render"]
