"""``python -m cfginv_lite compare`` on tiny settings (4 steps, one image per digit)."""
from __future__ import annotations

import pytest

from cfginv_lite.cli import compare, main
from cfginv_lite.presentation import COLUMNS


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
