"""Issue 20: ``compare --markdown/--plot`` lose nothing and overwrite nothing (write-time checks,
SIGTERM, a closed stdout, repeated values, PDF/SVG outputs, Ctrl-C before the run).

The comparison itself is replaced by a fake that makes rows instantly (and can act in the
middle of the run), so each test costs milliseconds.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cfginv_lite import cli
from cfginv_lite.ownership import MARKDOWN_MARKER

ROOT = Path(__file__).resolve().parents[1]


def _fake_compare(rows_to_make: int = 2, during=None, fail: BaseException | None = None, seen: dict | None = None):
    def fake(**kwargs):
        if seen is not None:
            seen.update(kwargs)
        rows = kwargs["into"]
        for i in range(rows_to_make):
            rows.append({"set": "generated", "cfg": float(kwargs["cfgs"][0]) + i, "steps": kwargs["steps_list"][0],
                         "method": "naive", "nfe": 4, "nfe_bwd": 0, "latent_rmse": 0.5, "image_rmse": 0.1 + i,
                         "psnr_db": 20.0, "seconds": 0.01})
        if during is not None:
            during()
        if fail is not None:
            raise fail
        return rows
    return fake


def _no_compare(**kwargs):
    raise AssertionError("the comparison ran although an output path was bad")


def _run(argv: list[str]) -> int:
    """``cli.main``'s exit code; a KeyboardInterrupt escaping it is a test failure, not a stopped session."""
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped cli.main (a raw traceback for the user)")


def _kept(folder: Path, stem: str, suffix: str) -> list[Path]:
    return sorted(folder.glob(f"{stem}.kept-*{suffix}"))


# --------------------------------------------------------------------------- write-time ownership
@pytest.mark.parametrize("content", ["my notes, created while the run went\n",
                                     MARKDOWN_MARKER + "\n| a second, concurrent run's table |\n"])
def test_markdown_that_appears_during_the_run_is_not_replaced(content, tmp_path, monkeypatch, capsys):
    md = tmp_path / "t.md"
    monkeypatch.setattr(cli, "compare", _fake_compare(during=lambda: md.write_text(content)))
    assert _run(["compare", "--markdown", str(md)]) == 2
    assert md.read_text() == content                       # whoever created it keeps it ...
    kept = _kept(tmp_path, "t", ".md")
    assert len(kept) == 1 and "| generated |" in kept[0].read_text()   # ... and our rows are not lost
    err = capsys.readouterr().err
    assert "appeared during the run" in err and str(kept[0]) in err and "--force" in err


def test_plot_that_appears_during_the_run_is_not_replaced(tmp_path, monkeypatch, capsys):
    from PIL import Image

    png = tmp_path / "f.png"
    monkeypatch.setattr(cli, "compare", _fake_compare(during=lambda: Image.new("RGB", (3, 3)).save(png)))
    assert _run(["compare", "--plot", str(png)]) == 2
    with Image.open(png) as img:
        assert img.size == (3, 3)
    kept = _kept(tmp_path, "f", ".png")
    assert len(kept) == 1 and kept[0].read_bytes()[:4] == b"\x89PNG"
    assert "appeared during the run" in capsys.readouterr().err


def test_force_replaces_a_file_that_appeared_during_the_run(tmp_path, monkeypatch):
    md = tmp_path / "t.md"
    monkeypatch.setattr(cli, "compare", _fake_compare(during=lambda: md.write_text("mine")))
    assert _run(["compare", "--markdown", str(md), "--force"]) == 0
    assert "| generated |" in md.read_text() and not _kept(tmp_path, "t", ".md")


def test_own_table_rewritten_by_someone_else_during_the_run_is_kept(tmp_path, monkeypatch, capsys):
    md = tmp_path / "t.md"
    monkeypatch.setattr(cli, "compare", _fake_compare())
    assert _run(["compare", "--markdown", str(md)]) == 0   # the tool's own table: replaceable at the start
    monkeypatch.setattr(cli, "compare", _fake_compare(during=lambda: md.write_text("edited by hand")))
    assert _run(["compare", "--markdown", str(md)]) == 2
    assert md.read_text() == "edited by hand" and len(_kept(tmp_path, "t", ".md")) == 1
    assert "did not write" in capsys.readouterr().err


def test_symlink_to_an_older_table_is_not_replaced_without_force(tmp_path, monkeypatch, capsys):
    old, link = tmp_path / "old.md", tmp_path / "t.md"
    monkeypatch.setattr(cli, "compare", _fake_compare(rows_to_make=1))
    assert _run(["compare", "--markdown", str(old)]) == 0
    before = old.read_text()
    link.symlink_to(old)
    monkeypatch.setattr(cli, "compare", _no_compare)        # refused before the run
    assert _run(["compare", "--markdown", str(link)]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "--force" in err
    assert link.is_symlink() and old.read_text() == before
    monkeypatch.setattr(cli, "compare", _fake_compare(rows_to_make=2))
    assert _run(["compare", "--markdown", str(link), "--force"]) == 0   # --force: the link becomes a file
    assert not link.is_symlink() and link.read_text().count("| generated |") == 2 and old.read_text() == before


def test_own_table_turned_into_a_symlink_during_the_run_is_kept(tmp_path, monkeypatch, capsys):
    md, elsewhere = tmp_path / "t.md", tmp_path / "elsewhere.md"
    elsewhere.write_text(MARKDOWN_MARKER + "\nolder table\n")
    monkeypatch.setattr(cli, "compare", _fake_compare())
    assert _run(["compare", "--markdown", str(md)]) == 0

    def swap():
        md.unlink()
        md.symlink_to(elsewhere)

    monkeypatch.setattr(cli, "compare", _fake_compare(during=swap))
    assert _run(["compare", "--markdown", str(md)]) == 2
    assert md.is_symlink() and elsewhere.read_text() == MARKDOWN_MARKER + "\nolder table\n"
    assert len(_kept(tmp_path, "t", ".md")) == 1 and "symbolic link" in capsys.readouterr().err


# --------------------------------------------------------------------------- SIGTERM, closed stdout
def test_sigterm_keeps_the_finished_rows(tmp_path):
    """In a child process: on the unfixed code SIGTERM kills it (exit -15) and writes nothing."""
    md = tmp_path / "t.md"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from cfginv_lite import cli

        def fake(**kwargs):
            kwargs["into"].append({{"set": "generated", "cfg": 1.0, "steps": 4, "method": "naive", "nfe": 4,
                                    "nfe_bwd": 0, "latent_rmse": 0.5, "image_rmse": 0.1, "psnr_db": 20.0,
                                    "seconds": 0.01}})
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler interrupts this
                signal.pause() if hasattr(signal, "pause") else None
            raise SystemExit("SIGTERM was ignored")

        cli.compare = fake
        raise SystemExit(cli.main(["compare", "--markdown", {str(md)!r}]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 143, (proc.returncode, proc.stderr[-2000:])
    assert "generated" in proc.stdout and "terminated" in proc.stderr and "Traceback" not in proc.stderr
    assert md.read_text().count("| generated |") == 1


class _BrokenStdout:
    def __init__(self, error: OSError) -> None:
        self.error = error

    def write(self, text: str) -> int:
        raise self.error

    def flush(self) -> None:
        raise self.error


@pytest.mark.parametrize("error", [BrokenPipeError(errno.EPIPE, "Broken pipe"),
                                   OSError(errno.ENOSPC, "No space left on device")], ids=["pipe", "disk-full"])
def test_unprintable_table_still_writes_the_files(error, tmp_path, monkeypatch, capsys):
    md, png = tmp_path / "t.md", tmp_path / "f.png"
    monkeypatch.setattr(cli, "compare", _fake_compare())
    monkeypatch.setattr(sys, "stdout", _BrokenStdout(error))
    code = _run(["compare", "--markdown", str(md), "--plot", str(png)])
    err = capsys.readouterr().err
    assert code == 2
    assert md.read_text().count("| generated |") == 2 and png.read_bytes()[:4] == b"\x89PNG"
    assert "could not print the table" in err and error.strerror in err and "Traceback" not in err


# --------------------------------------------------------------------------- arguments
def test_repeated_values_run_once_with_a_note(monkeypatch, capsys):
    seen: dict = {}
    monkeypatch.setattr(cli, "compare", _fake_compare(seen=seen))
    assert _run(["compare", "--cfg", "1", "7.5", "7.50", "1", "--steps", "4", "4", "--methods", "naive", "naive",
                 "original"]) == 0
    assert seen["cfgs"] == [1.0, 7.5] and seen["steps_list"] == [4] and seen["methods"] == ["naive", "original"]
    err = capsys.readouterr().err
    assert "note: --cfg 1 7.5 given more than once" in err
    assert "note: --steps 4 given more than once" in err and "note: --methods naive given more than once" in err


def test_ctrl_c_before_the_run_is_a_message_not_a_traceback(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "check_compare_args", interrupted)   # e.g. while the device is probed
    monkeypatch.setattr(cli, "compare", _no_compare)
    assert _run(["compare"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


# --------------------------------------------------------------------------- PDF and SVG plots
@pytest.mark.parametrize("suffix", ["pdf", "svg"])
def test_own_pdf_and_svg_plots_are_replaced_on_a_rerun(suffix, tmp_path, monkeypatch):
    plot = tmp_path / f"f.{suffix}"
    monkeypatch.setattr(cli, "compare", _fake_compare())
    assert _run(["compare", "--plot", str(plot)]) == 0
    first = plot.read_bytes()
    assert _run(["compare", "--plot", str(plot)]) == 0           # its own file: no --force needed
    assert plot.read_bytes()[:5] == first[:5] and not _kept(tmp_path, "f", f".{suffix}")


@pytest.mark.parametrize("suffix", ["pdf", "svg"])
def test_foreign_pdf_and_svg_plots_are_still_refused(suffix, tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = tmp_path / f"paper_figure.{suffix}"
    fig = plt.figure()
    fig.savefig(plot, format=suffix)          # matplotlib's own Creator, not cfginv-lite's
    plt.close(fig)
    before = plot.read_bytes()
    monkeypatch.setattr(cli, "compare", _no_compare)
    assert _run(["compare", "--plot", str(plot)]) == 2
    assert plot.read_bytes() == before and "--force" in capsys.readouterr().err


# --------------------------------------------------------------------------- unwritable outputs up front
@pytest.mark.parametrize("option, name", [("--markdown", "t.md"), ("--plot", "f.png")])
def test_output_under_a_file_is_refused_before_the_run(option, name, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    monkeypatch.setattr(cli, "compare", _no_compare)
    assert _run(["compare", option, str(a_file / name)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_immutable_own_output_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    """``chattr +i`` stops even root from replacing a file; the unfixed code found out after the run."""
    md = tmp_path / "t.md"
    md.write_text(MARKDOWN_MARKER + "\nan older table\n")
    try:
        made = subprocess.run(["chattr", "+i", str(md)], capture_output=True).returncode == 0
    except FileNotFoundError:
        made = False
    if not made:
        pytest.skip("chattr +i is not available here (no e2fsprogs, or not allowed on this file system)")
    try:
        monkeypatch.setattr(cli, "compare", _no_compare)
        assert _run(["compare", "--markdown", str(md)]) == 2
        assert "immutable" in capsys.readouterr().err
    finally:
        subprocess.run(["chattr", "-i", str(md)], capture_output=True)


def test_results_are_kept_when_the_path_cannot_be_replaced_at_write_time(tmp_path, monkeypatch, capsys):
    """Even with --force: a path that became a folder during the run cannot take the file."""
    md = tmp_path / "t.md"
    monkeypatch.setattr(cli, "compare", _fake_compare(during=lambda: md.mkdir()))
    assert _run(["compare", "--markdown", str(md), "--force"]) == 2
    assert md.is_dir()
    kept = _kept(tmp_path, "t", ".md")
    assert len(kept) == 1 and kept[0].read_text().count("| generated |") == 2
    err = capsys.readouterr().err
    assert "could not be replaced" in err and str(kept[0]) in err


@pytest.mark.slow
def test_closed_pipe_end_to_end(tmp_path):
    """``compare ... | head -0`` in a child process: files written, one message, no traceback at exit."""
    md = tmp_path / "t.md"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from cfginv_lite import cli

        def fake(**kwargs):
            time.sleep(0.5)   # the reader is gone by now
            kwargs["into"].extend({{"set": "generated", "cfg": float(i), "steps": 4, "method": "naive", "nfe": 4,
                                    "nfe_bwd": 0, "latent_rmse": 0.5, "image_rmse": 0.1, "psnr_db": 20.0,
                                    "seconds": 0.01}} for i in range(5000))   # more than a pipe buffer holds

        cli.compare = fake
        raise SystemExit(cli.main(["compare", "--markdown", {str(md)!r}]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    proc.stdout.close()           # like `| head -0`
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    assert "could not print the table" in err and "Traceback" not in err and "Exception ignored" not in err
    assert md.read_text().count("| generated |") == 5000


def test_sigterm_while_the_files_are_written_does_not_cut_them_short(tmp_path, monkeypatch, capsys):
    """A SIGTERM after the run (while writing) is noted: the files are written, then exit 143."""
    md, png = tmp_path / "t.md", tmp_path / "f.png"
    real_write = cli._write_outputs

    def write_after_a_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)   # delivered at once, in the main thread
        return real_write(*args, **kwargs)

    monkeypatch.setattr(cli, "compare", _fake_compare())
    monkeypatch.setattr(cli, "_write_outputs", write_after_a_sigterm)

    def safety(signum, frame):  # the unfixed code installs no handler: fail the test, not the pytest process
        raise RuntimeError("SIGTERM was not handled by the CLI")

    previous = signal.signal(signal.SIGTERM, safety)
    try:
        assert _run(["compare", "--markdown", str(md), "--plot", str(png)]) == 143
        assert signal.getsignal(signal.SIGTERM) is safety    # the CLI restored the handler it found
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert md.read_text().count("| generated |") == 2 and png.read_bytes()[:4] == b"\x89PNG"
    assert "terminated" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["cfginv_lite", "cfginv_lite.models.train_digits"])
def test_ctrl_c_while_the_libraries_load_exits_130_without_a_traceback(module, tmp_path):
    """Ctrl-C during the seconds torch takes to import, made deterministic: a stand-in ``torch``
    module first on the path raises KeyboardInterrupt when imported."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "torch.py").write_text("raise KeyboardInterrupt\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    args = ["compare", "--no-progress"] if module == "cfginv_lite" else ["--no-progress", "--out", str(tmp_path / "w")]
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
