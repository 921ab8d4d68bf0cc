"""``python -m cfginv_lite compare`` on tiny settings (4 steps, one image per digit)."""
from __future__ import annotations

import math
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import cfginv_lite as cl
from cfginv_lite import cli

from cfginv_lite.cli import compare, main
from cfginv_lite.validation import check_grid
from cfginv_lite.presentation import COLUMNS
from run_helpers import _VALUES, _exit_code, _fake_compare, _no_compare


@pytest.fixture(scope="module")
def rows():
    return compare(cfgs=(1.0, 7.5), steps_list=(4,), methods=("naive", "original"), images_per_digit=1,
                   progress=False)


def test_compare_returns_one_row_per_setting_with_costs_and_errors(rows):
    assert [(r["cfg"], r["method"]) for r in rows] == [(1.0, "naive"), (1.0, "original"), (7.5, "naive"),
                                                       (7.5, "original")]
    assert all(set(r) == set(COLUMNS) and r["set"] == "generated" and r["steps"] == 4 for r in rows)
    naive = {r["cfg"]: r for r in rows if r["method"] == "naive"}
    original = {r["cfg"]: r for r in rows if r["method"] == "original"}
    # 4 steps: naive 2 NFE per step; the original refines step 3 (i > 4 * 0.7) with up to 3 iterations.
    assert naive[1.0]["nfe"] == 8 and 8 < original[7.5]["nfe"] <= 8 + 3 * 2
    # The phenomenon the package is about: naive inversion breaks down at high guidance.
    assert naive[7.5]["latent_rmse"] > 1.5 * naive[1.0]["latent_rmse"]  # measured: 1.40 vs 0.80
    assert naive[7.5]["image_rmse"] > naive[1.0]["image_rmse"]
    assert all(r["psnr_db"] > 0 and r["seconds"] > 0 and r["nfe_bwd"] == 0 for r in rows)


def test_compare_refuses_unknown_methods_and_models():
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['nope'\]"):
        compare(methods=("nope",), progress=False)
    with pytest.raises(ValueError, match="generates prompts for the digits model"):
        compare(model_name="stable-diffusion", progress=False)


def test_main_prints_the_table_and_writes_markdown_and_plot(tmp_path, capsys):
    md, png = tmp_path / "table.md", tmp_path / "plot.png"
    code = main(["compare", "--cfg", "1", "3", "--steps", "4", "--methods", "naive", "--images-per-digit", "1",
                 "--no-progress", "--markdown", str(md), "--plot", str(png)])
    out = capsys.readouterr()
    assert code == 0
    lines = out.out.strip().splitlines()
    assert lines[0].split() == list(COLUMNS) and len(lines) == 3
    assert lines[1].split()[:4] == ["generated", "1", "4", "naive"]
    assert md.read_text().splitlines()[1] == "| " + " | ".join(COLUMNS) + " |"   # after the tool's marker line
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"saved {png}" in out.err


def test_main_reports_bad_arguments_as_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--methods", "nope", "--no-progress"])
    assert info.value.code == 2 and "unknown method(s) ['nope']" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
@pytest.mark.parametrize("option, target", [("--plot", "/proc/cfginv_x.png"), ("--markdown", "{dir}"),
                                            ("--markdown", "{dir}/missing/x.md"), ("--plot", "{dir}/figure.xyz"),
                                            ("--plot", "{dir}/no_extension")])
def test_cli_checks_output_paths_before_the_run(option, target, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "compare", _no_compare)
    code = _exit_code(cli.main, ["compare", option, target.format(dir=tmp_path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_cli_failing_markdown_does_not_block_the_plot(tmp_path, monkeypatch, capsys):
    md_dir = tmp_path / "md"
    md_dir.mkdir()
    # The folder disappears while the run is going: only the write itself can fail now.
    monkeypatch.setattr(cli, "compare", _fake_compare(before_fail=lambda: shutil.rmtree(md_dir)))
    code = _exit_code(cli.main, ["compare", "--markdown", str(md_dir / "t.md"), "--plot", str(tmp_path / "f.png")])
    assert code == 2
    assert (tmp_path / "f.png").stat().st_size > 0
    captured = capsys.readouterr()
    assert "could not write --markdown" in captured.err and "generated" in captured.out


def test_cli_refuses_to_overwrite_files_it_did_not_write(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n" + "x" * 7000)
    picture = tmp_path / "holiday.png"
    Image.new("RGB", (8, 8)).save(picture)
    monkeypatch.setattr(cli, "compare", _no_compare)
    assert _exit_code(cli.main, ["compare", "--markdown", str(readme)]) == 2
    assert _exit_code(cli.main, ["compare", "--plot", str(picture)]) == 2
    assert "--force" in capsys.readouterr().err
    assert readme.read_text().startswith("# my project") and len(readme.read_text()) > 7000
    monkeypatch.setattr(cli, "compare", _fake_compare())
    assert _exit_code(cli.main, ["compare", "--markdown", str(readme), "--force"]) == 0
    assert "| set |" in readme.read_text()


def test_cli_replaces_its_own_files_without_force(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "compare", _fake_compare())
    md, png = tmp_path / "t.md", tmp_path / "f.png"
    for _ in range(2):  # the second run replaces what the first wrote
        assert _exit_code(cli.main, ["compare", "--markdown", str(md), "--plot", str(png)]) == 0
    assert md.read_text().count("| generated |") == 2
    with Image.open(png) as img:
        assert img.info["Software"] == "cfginv-lite compare"


def test_cli_help_mentions_force(capsys):
    assert _exit_code(cli.main, ["compare", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--force" in help_text and "did not write" in help_text


@pytest.mark.parametrize("device", ["bogus", "cuda"])
def test_cli_device_errors_before_the_run(device, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cli, "compare", _no_compare)
    assert _exit_code(cli.main, ["compare", "--device", device]) == 2
    err = capsys.readouterr().err
    assert "device" in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["--steps", "2", "0"], ["--steps", "2", "5000"], ["--cfg", "1", "nan"],
                                  ["--cfg", "1", "-3"], ["--seed", "-5"], ["--seed", str(2**70)],
                                  ["--images-per-digit", "2000"], ["--spacing", "trailing", "--steps", "20", "700"],
                                  ["--spacing", "leading", "--steps", "20", "1000"]])
def test_cli_validates_every_argument_before_the_first_network_call(args, monkeypatch, capsys):
    import cfginv_lite.sampling as sampling

    monkeypatch.setattr(sampling, "generate", _no_compare)   # the first network call of compare
    assert _exit_code(cli.main, ["compare", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["--images-per-digit", "0"], ["--methods", "naive", "bogus"],
                                  ["--model", "stable-diffusion"]])
def test_cli_rejections_that_already_worked_stay_up_front(args, monkeypatch, capsys):
    import cfginv_lite.sampling as sampling

    monkeypatch.setattr(sampling, "generate", _no_compare)
    assert _exit_code(cli.main, ["compare", "--no-progress", *args]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_keeps_finished_rows_when_a_later_job_fails(tmp_path, monkeypatch, capsys):
    import cfginv_lite.experiment as experiment

    real = experiment.reconstruct
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise cl.NonFiniteLatentError("invert: latents became NaN/inf at step 1")
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "reconstruct", flaky)
    md = tmp_path / "t.md"
    code = _exit_code(cli.main, ["compare", "--no-progress", "--steps", "2", "--cfg", "1", "3",
                                 "--images-per-digit", "1", "--markdown", str(md)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.count("generated") == 1                  # the finished row is printed ...
    assert md.read_text().count("| generated |") == 1            # ... and written
    assert "stopped after 1 row" in captured.err and "Traceback" not in captured.err


def test_cli_keeps_finished_rows_on_ctrl_c(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "compare", _fake_compare(rows_to_make=1, fail=KeyboardInterrupt()))
    assert _exit_code(cli.main, ["compare", "--markdown", str(tmp_path / "t.md")]) == 130
    assert "generated" in capsys.readouterr().out and (tmp_path / "t.md").exists()


_FLAGS = ["--model", "--cfg", "--steps", "--methods", "--images-per-digit", "--seed", "--spacing", "--sampler",
          "--real", "--plot", "--markdown", "--force", "--device", "--no-progress", "--bogus", "-h"]


def _checking_compare(**kw):
    """Stands in for compare: every value that got past validation must be one compare accepts."""
    assert kw["model_name"] in ("digits", "mini-sd")
    assert kw["cfgs"] and all(type(w) is float and math.isfinite(w) and w >= 0 for w in kw["cfgs"])
    assert kw["steps_list"] and all(type(n) is int and 1 <= n <= 999 for n in kw["steps_list"])
    for n in kw["steps_list"]:
        check_grid(cl.timestep_grid(n, kw["spacing"]), 1000)
    assert set(kw["methods"]) <= set(cli._methods()) and kw["sampler"] in ("ddim", "lms")
    assert 1 <= kw["images_per_digit"] <= cli.MAX_IMAGES_PER_DIGIT and 0 <= kw["seed"] < 2**64
    assert kw["device"] in (None, "cpu")
    return _fake_compare(rows_to_make=1)(**kw)


@settings(max_examples=120, deadline=None)
@given(tokens=st.lists(st.one_of(st.sampled_from(_FLAGS), _VALUES), max_size=8))
def test_fuzz_cli_arguments(tmp_path_factory, tokens):
    work = tmp_path_factory.mktemp("cli")
    (work / "README.md").write_text("# user file\n")
    (work / "sub").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setattr(torch.cuda, "is_available", lambda: False)
        mp.setattr(cli, "compare", _checking_compare)
        try:
            code = cli.main(["compare", *tokens])
        except SystemExit as stop:
            code = stop.code
    assert code in (0, 2)
    if "--force" not in tokens:  # a file the tool did not write is never replaced without --force
        assert (work / "README.md").read_text() == "# user file\n"
    assert (work / "sub").is_dir()
