"""The course figure style: >= 100 dpi, >= 9 pt text, constrained layout."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from cfginv_lite import style


def test_rc_params_meet_the_course_minimums() -> None:
    rc = style.rc_params()
    assert rc["figure.dpi"] >= 100 and rc["figure.constrained_layout.use"] is True
    sizes = [v for k, v in rc.items() if k.endswith(("size", "fontsize")) and "marker" not in k]
    assert sizes and min(sizes) >= style.MIN_FONT_PT >= 9
    assert min(v for k, v in style.rc_params(font_size=8).items() if k.endswith("labelsize")) >= 9


def test_use_applies_the_style_outside_ipython_too() -> None:
    with matplotlib.rc_context():
        style.use()
        fig, ax = plt.subplots()
        ax.set_title("t"), ax.set_xlabel("x"), ax.legend(handles=ax.plot([0, 1], label="a"))
        assert fig.dpi == 100 and fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
        fig.canvas.draw()
        assert min(t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()) >= 9
        plt.close(fig)
