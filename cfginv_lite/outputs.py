"""Safe output files for the command-line tools (``compare --plot/--markdown``, the digits trainer).

Two rules, both checked **before** any work starts, so no run loses its results to a bad path:

1. An output path must be writable: its folder exists and accepts a new file (probed by
   creating and removing a temporary file there, which also catches ``/proc``, read-only
   mounts and missing permissions), and the path is not a folder, a device or a FIFO.
2. An existing file is replaced only if the tool wrote it itself (a marker it leaves in
   the file: a first-line comment in Markdown, the ``Software`` text chunk in PNG) or if
   the user passed ``--force``. Everything else the user owns is refused.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so
a failure while writing never leaves a truncated file behind.
"""
from __future__ import annotations

import contextlib
import functools
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

#: Marker the tool writes, and looks for before replacing a file without ``--force``.
SOFTWARE = "cfginv-lite compare"
MARKDOWN_MARKER = "<!-- written by cfginv-lite compare (it may replace this file when run again) -->"

_VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


class OutputPathError(ValueError):
    """An output path is unusable (missing folder, not writable, a folder, or a file the tool must not replace)."""


def _virtual(path: Path) -> bool:
    text = str(path)
    if text == "/dev/shm" or text.startswith("/dev/shm/"):  # shared memory is ordinary (tmpfs) storage
        return False
    return any(text == root or text.startswith(root + "/") for root in _VIRTUAL_ROOTS)


def _expand(text: str) -> Path:
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~user" for an unknown user: take the name literally
        return Path(text)


def _absolute(path: Path) -> Path:
    # Resolve the folder (symlinks, "..") but keep the final name as given.
    return path.parent.resolve() / path.name if path.name else path.resolve()


def _probe_folder(folder: Path, what: str, shown: str) -> None:
    """Create and delete a temporary file in ``folder``: the only reliable writability test (root, /proc, ro mounts)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".cfginv-write-test-", dir=folder)
    except OSError as err:
        raise OutputPathError(f"cannot write the {what} {shown!r}: its folder {str(folder)!r} does not accept new "
                              f"files ({err.strerror or type(err).__name__})") from None
    os.close(fd)
    os.unlink(probe)


def is_tool_markdown(path: Path) -> bool:
    """Whether ``path`` starts with :data:`MARKDOWN_MARKER` (a table this tool wrote)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\r\n") == MARKDOWN_MARKER
    except OSError:
        return False


def is_tool_image(path: Path) -> bool:
    """Whether ``path`` is a PNG whose ``Software`` text chunk is :data:`SOFTWARE` (a figure this tool wrote)."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get("Software") == SOFTWARE
    except Exception:  # not an image at all: certainly not ours
        return False


def _guarded(check: Callable[..., Path]) -> Callable[..., Path]:
    """Report OS-level failures (name too long, NUL byte, permission) as one-line :class:`OutputPathError`."""
    @functools.wraps(check)
    def wrapper(path: Any, *args: Any, **kwargs: Any) -> Path:
        try:
            return check(path, *args, **kwargs)
        except OutputPathError:
            raise
        except (OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            shown = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
            raise OutputPathError(f"cannot use the {kwargs.get('what', 'output path')} {shown!r}: {reason}") from None
    return wrapper


@_guarded
def check_output_file(path: Any, *, what: str = "output file", force: bool = False,
                      owned: Callable[[Path], bool] | None = None) -> Path:
    """Validate one output file path before any work; return it as an absolute :class:`Path`.

    Raises :class:`OutputPathError` (a ``ValueError``) when the path is empty, a folder, a
    device/FIFO/``/proc`` path, in a missing or unwritable folder, or an existing file that
    ``owned`` does not recognise as the tool's own and ``force`` is false.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise OutputPathError(f"the {what} path is empty; give a file name")
    shown = os.fspath(path)
    p = _absolute(_expand(shown))
    if _virtual(p):
        raise OutputPathError(f"cannot write the {what} to {shown!r}: {p.parts[1]!r} is a system folder, not storage")
    if p.is_dir():
        raise OutputPathError(f"the {what} {shown!r} is a folder; give a file name inside it")
    if p.exists() or p.is_symlink():
        try:
            mode = os.stat(p).st_mode
        except OSError as err:
            raise OutputPathError(f"cannot use the {what} {shown!r}: {err.strerror}") from None
        if not stat.S_ISREG(mode):
            raise OutputPathError(f"the {what} {shown!r} exists and is not a regular file (a device or FIFO?)")
        if not force and not (owned is not None and owned(p)):
            raise OutputPathError(f"the {what} {shown!r} already exists and was not written by cfginv-lite; "
                                  "pass --force to overwrite it, or choose another name")
    folder = p.parent
    if not folder.exists():
        raise OutputPathError(f"cannot write the {what} {shown!r}: the folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise OutputPathError(f"cannot write the {what} {shown!r}: {str(folder)!r} is not a folder")
    _probe_folder(folder, what, shown)
    return p


@_guarded
def check_output_dir(path: Any, names: Iterable[str], *, what: str = "output folder", force: bool = False,
                     protected: Iterable[Path] = ()) -> Path:
    """Validate a folder that will receive the files ``names``; it may not exist yet (it is created).

    Refuses, unless ``force``: a folder in ``protected`` (the package's shipped weights) and a
    folder that already holds any of ``names``. Always refuses a path that is a file, a system
    folder, or whose nearest existing ancestor does not accept new files.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise OutputPathError(f"the {what} path is empty; give a folder name")
    shown = os.fspath(path)
    p = _expand(shown).resolve()
    if _virtual(p):
        raise OutputPathError(f"cannot write the {what} to {shown!r}: {p.parts[1]!r} is a system folder, not storage")
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"the {what} {shown!r} is a file, not a folder")
    if not force and any(p == Path(q).resolve() for q in protected):
        raise OutputPathError(f"the {what} {shown!r} holds the weights shipped with the package, which every "
                              "notebook and CLI run loads; pass --force to replace them deliberately, or choose "
                              "another folder")
    existing = [n for n in names if (p / n).exists() or (p / n).is_symlink()]
    for name in existing:
        if not (p / name).is_file():
            raise OutputPathError(f"{str(p / name)!r} exists and is not a regular file")
    if existing and not force:
        raise OutputPathError(f"the {what} {shown!r} already holds {', '.join(existing)}; pass --force to "
                              "overwrite, or choose another folder")
    ancestor = p
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"cannot create the {what} {shown!r}: {str(ancestor)!r} is a file")
    _probe_folder(ancestor, what, shown)
    return p


def _default_mode(path: Path) -> int:
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it into place in one step."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _default_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


__all__ = ["MARKDOWN_MARKER", "OutputPathError", "SOFTWARE", "check_output_dir", "check_output_file",
           "is_tool_image", "is_tool_markdown", "write_atomic", "write_text_atomic"]
