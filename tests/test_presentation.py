"""Tables and figures: what they print and draw."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cfginv_lite.presentation import (COLUMNS, benchmark_rows, editing_rows, format_table, image_rows,  # noqa: E402
                                      load_docs_json, plot_rows, to_display)

ROWS = [
    {"set": "generated", "cfg": 7.5, "steps": 20, "method": "naive", "nfe": 40, "nfe_bwd": 0,
     "latent_rmse": 0.123456, "image_rmse": 12.3456, "psnr_db": 18.2, "seconds": 0.5},
    {"set": "real", "cfg": 1.0, "steps": 20, "method": "original", "nfe": 52, "nfe_bwd": 0,
     "latent_rmse": None, "image_rmse": 0.01, "psnr_db": 40.0, "seconds": 1.25},
]


def test_plain_table_is_aligned_and_rounded():
    lines = format_table(ROWS).splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert lines[1].split() == ["generated", "7.5", "20", "naive", "40", "0", "0.1235", "12.35", "18.20", "0.5000"]
    assert lines[2].split()[1] == "1" and lines[2].split()[6] == "-"  # cfg compact, None as "-"
    assert len({len(line) for line in lines}) == 1  # fixed width


def test_markdown_table_and_column_subset():
    md = format_table(ROWS, markdown=True, columns=("method", "nfe")).splitlines()
    assert md == ["| method | nfe |", "|---|---|", "| naive | 40 |", "| original | 52 |"]
    assert format_table([], columns=("a", "b")) == "a  b"


def test_plot_rows_draws_one_line_per_set_method_and_steps(tmp_path):
    path = tmp_path / "rows.png"
    rows = ROWS + [{**ROWS[0], "cfg": 1.0, "image_rmse": 0.02}]
    plot_rows(rows, str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_image_rows_grid_and_display_range():
    shown = to_display(torch.tensor([[[[-2.0, 0.0], [1.0, 3.0]]]]))
    assert shown.shape == (1, 2, 2) and np.allclose(shown[0], [[0.0, 0.5], [1.0, 1.0]])
    rgb = to_display(torch.zeros(2, 4, 3, 3))
    assert rgb.shape == (2, 3, 3, 3)  # first 3 channels as RGB
    fig = image_rows([torch.zeros(5, 1, 8, 8), torch.ones(3, 1, 8, 8)], ["a", "b"], col_titles=["x"], max_cols=4)
    axes = fig.axes
    assert len(axes) == 2 * 4
    assert axes[0].get_ylabel() == "a" and axes[4].get_ylabel() == "b" and axes[0].get_title() == "x"
    assert len(axes[0].images) == 1 and len(axes[7].images) == 0  # row "b" has 3 images: 4th cell empty


def test_docs_json_helpers_read_the_committed_files_and_tolerate_their_absence(tmp_path):
    bench = load_docs_json("compare_methods")
    assert bench is not None  # committed in the repository
    rows = benchmark_rows(bench, case="real", cfg=7.5, steps=20)
    assert rows["naive"]["nfe"] == 40 and rows["naive"]["n"] == 100
    assert all(r["case"] == "real" and r["steps"] == 20 for r in rows.values())
    edits = editing_rows(load_docs_json("editing"))
    assert ("naive", 0.0) in edits and 0.0 <= edits[("naive", 0.0)]["success"] <= 1.0
    # outside the repository (a pip install): None, and the row helpers give {}
    assert load_docs_json("compare_methods", docs_dir=tmp_path) is None
    assert benchmark_rows(None) == {} and editing_rows(None) == {}
    (tmp_path / "bad.json").write_text("[1, 2]")
    import pytest
    with pytest.raises(ValueError, match="not a JSON object"):
        load_docs_json("bad", docs_dir=tmp_path)
