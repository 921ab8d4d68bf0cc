"""Issue 20: :func:`cfginv_lite.outputs.write_output`, the write-time half of the ownership rule,
including file systems without hard links (its exclusive-create fallback)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cfginv_lite import outputs
from cfginv_lite.outputs import OutputConflictError, write_output


def _write(text: str):
    return lambda tmp: Path(tmp).write_text(text)


@pytest.fixture(params=["link", "no-hard-links"])
def links(request, monkeypatch):
    if request.param == "no-hard-links":   # e.g. FAT or some network shares
        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(outputs.os, "link", no_link)
    return request.param


def test_a_free_path_is_claimed_and_an_occupied_one_is_kept_aside(tmp_path, links):
    path = tmp_path / "t.md"
    write_output(path, _write("first"), existed=False)
    assert path.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]
    with pytest.raises(OutputConflictError, match="appeared during the run") as info:
        write_output(path, _write("second"), existed=False)        # someone else's file now
    assert path.read_text() == "first" and info.value.kept.read_text() == "second"
    assert isinstance(info.value, FileExistsError) and "--force" in str(info.value)


def test_force_replaces_and_leaves_no_temporary_file(tmp_path, links):
    path = tmp_path / "t.md"
    path.write_text("theirs")
    write_output(path, _write("ours"), existed=False, force=True)
    assert path.read_text() == "ours" and sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def broken(tmp):
        Path(tmp).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_output(tmp_path / "t.md", broken, existed=False)
    assert list(tmp_path.iterdir()) == []


def test_new_files_get_the_permissions_of_a_plain_open(tmp_path):
    path = tmp_path / "t.md"
    write_output(path, _write("x"), existed=False)
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
