"""Safe output files for the command-line tools (``compare --plot/--markdown``, the digits trainer)
and the benchmark scripts (through :mod:`cfginv_lite.benchmark`).

Two rules, both checked **before** any work starts, so no run loses its results to a bad path:

1. An output path must be writable: its folder exists and accepts a new file (probed by
   creating and removing a temporary file there, which also catches ``/proc``, read-only
   mounts and missing permissions), and the path is not a folder, a device or a FIFO.
2. An existing file is replaced only if the tool wrote it itself (a marker it leaves in
   the file, :mod:`cfginv_lite.ownership`: a first-line comment in Markdown, the ``Software``
   text chunk in PNG, the ``Creator`` of a PDF or SVG) or if the user passed ``--force``.
   Everything else the user owns is refused, and so is a symbolic link (replacing it would
   cut the link), even one pointing at a table the tool wrote.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so
a failure while writing never leaves a truncated file behind. The ownership rule is checked
again when the file is written (:func:`write_output`): a path that was free at the start is
claimed exclusively (``os.link`` of the finished temporary file, which fails if anything,
e.g. a second run, created the path meanwhile), and an existing one must still be the tool's
own regular file. A refused write keeps its results in a new file next to the path
(:class:`OutputConflictError` names it).
"""
from __future__ import annotations

import contextlib
import functools
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable


_VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


class OutputPathError(ValueError):
    """An output path is unusable (missing folder, not writable, a folder, or a file the tool must not replace)."""


class OutputConflictError(FileExistsError):
    """At write time the path was no longer free or the tool's own; ``kept`` holds the results instead."""

    def __init__(self, message: str, kept: Path | None = None) -> None:
        super().__init__(message)
        self.kept = kept

    def __str__(self) -> str:
        return str(self.args[0])


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


_FS_IOC_GETFLAGS = 0x80086601  # Linux; <linux/fs.h>
_FS_IMMUTABLE_FL, _FS_APPEND_FL = 0x10, 0x20


def _immutable(path: Path) -> bool:
    """Whether ``path`` carries the Linux immutable or append-only attribute (``chattr +i``/``+a``):
    such a file cannot be replaced, even by root. False where the flags cannot be read."""
    try:
        import array
        import fcntl

        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (ImportError, OSError):
        return False
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        return bool(flags[0] & (_FS_IMMUTABLE_FL | _FS_APPEND_FL))
    except (OSError, ValueError, OverflowError):  # not Linux, or a file system without these flags
        return False
    finally:
        os.close(fd)


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
                      owned: Callable[[Path], bool] | None = None, owner: str = "cfginv-lite") -> Path:
    """Validate one output file path before any work; return it as an absolute :class:`Path`.

    Raises :class:`OutputPathError` (a ``ValueError``) when the path is empty, a folder, a
    device/FIFO/``/proc`` path, in a missing or unwritable folder, or an existing file that
    ``owned`` does not recognise as the tool's own and ``force`` is false (the message says it
    was not written by ``owner``).
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise OutputPathError(f"the {what} path is empty; give a file name")
    shown = os.fspath(path)
    p = _absolute(_expand(shown))
    if _virtual(p):
        raise OutputPathError(f"cannot write the {what} to {shown!r}: {p.parts[1]!r} is a system folder, not storage")
    if p.is_dir():
        raise OutputPathError(f"the {what} {shown!r} is a folder; give a file name inside it")
    if p.is_symlink() and not force:
        raise OutputPathError(f"the {what} {shown!r} is a symbolic link; replacing it would cut the link "
                              "(to wherever it points); pass --force to replace the link with a file, or "
                              "choose another name")
    if p.exists() or p.is_symlink():
        try:
            mode = os.stat(p).st_mode
        except OSError as err:
            raise OutputPathError(f"cannot use the {what} {shown!r}: {err.strerror}") from None
        if not stat.S_ISREG(mode):
            raise OutputPathError(f"the {what} {shown!r} exists and is not a regular file (a device or FIFO?)")
        if not force and not (owned is not None and owned(p)):
            raise OutputPathError(f"the {what} {shown!r} already exists and was not written by {owner}; "
                                  "pass --force to overwrite it, or choose another name")
        if _immutable(p):
            raise OutputPathError(f"the {what} {shown!r} is immutable or append-only (chattr +i/+a) and cannot be "
                                  "replaced; remove the attribute (chattr -i -a) or choose another name")
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
    stuck = [name for name in existing if _immutable(p / name)]
    if stuck:
        raise OutputPathError(f"{', '.join(stuck)} in the {what} {shown!r} is immutable or append-only "
                              "(chattr +i/+a) and cannot be replaced; remove the attribute (chattr -i -a) or "
                              "choose another folder")
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


def _claim_exclusively(tmp: str, path: Path) -> None:
    """Put the finished ``tmp`` at ``path`` only if nothing is there (FileExistsError otherwise)."""
    try:
        os.link(tmp, path)  # atomic and exclusive: the whole file appears, or nothing
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: an exclusive create, then copy
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as out, open(tmp, "rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
    os.unlink(tmp)


def _keep(tmp: str, path: Path) -> Path:
    """Move the refused results to a new, visible file next to ``path``; return its name."""
    fd, kept = tempfile.mkstemp(prefix=f"{path.stem}.kept-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.replace(tmp, kept)
    return Path(kept)


def write_output(path: Path, write: Callable[[Path], None], *, existed: bool, force: bool = False,
                 owned: Callable[[Path], bool] | None = None, what: str = "output file") -> None:
    """Write ``path`` atomically, checking the ownership rule again at write time.

    ``existed`` is whether anything was at ``path`` when :func:`check_output_file` accepted it.
    With ``force`` the file is replaced whatever is there now. Otherwise a path that was free
    must still be free (the finished file is linked into place exclusively, so a second run or
    a file created meanwhile is never replaced), and a path that held the tool's own file
    must still hold a regular file that ``owned`` recognises (not a symbolic link). When that
    fails, the results are kept in a new file next to ``path`` and :class:`OutputConflictError`
    (a ``FileExistsError``) says where.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _default_mode(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        reason = _place(tmp, path, existed=existed, force=force, owned=owned)
    except OSError as err:  # e.g. the path became a folder meanwhile: the finished results stay
        reason = f"could not be replaced ({err.strerror or err})"
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if reason is None:
        return
    hint = "" if force else " (pass --force to overwrite)"
    try:
        kept = _keep(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputConflictError(f"the {what} {str(path)!r} {reason}; it was left alone, and the results could "
                                  f"not be kept next to it either ({err.strerror or err})") from None
    raise OutputConflictError(f"the {what} {str(path)!r} {reason}; it was left alone and the results were "
                              f"written to {str(kept)!r} instead{hint}", kept)


def _place(tmp: str, path: Path, *, existed: bool, force: bool, owned: Callable[[Path], bool] | None) -> str | None:
    """Move the finished ``tmp`` to ``path`` if the rules of :func:`write_output` allow; else say why not."""
    if force:
        os.replace(tmp, path)
        return None
    if not existed:
        try:
            _claim_exclusively(tmp, path)
            return None
        except FileExistsError:
            return "appeared during the run (another run, or another program, created it)"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:  # removed meanwhile: free again, claim it
        try:
            _claim_exclusively(tmp, path)
            return None
        except FileExistsError:
            mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "became a symbolic link during the run"
    if not stat.S_ISREG(mode) or not (owned is not None and owned(path)):
        return "was replaced during the run by a file cfginv-lite did not write"
    os.replace(tmp, path)
    return None


__all__ = ["OutputConflictError", "OutputPathError", "check_output_dir", "check_output_file", "write_atomic",
           "write_output", "write_text_atomic"]
