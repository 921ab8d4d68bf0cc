"""The course's figure style: readable at 100% zoom, sharp enough for high-resolution screens.

Every notebook calls it once, in its setup cell, after importing pyplot::

    import cfginv_lite.style
    cfginv_lite.style.use()            # or: from cfginv_lite import style; style.use()

and the widget setup for Colab is :func:`cfginv_lite.widgets.enable_colab_widgets`.

:func:`use` sets matplotlib's rcParams (figures at 100 dpi, text at 9-11 pt, constrained
layout) and, inside IPython, makes the inline backend render every figure at no less than
``dpi`` dots per inch, so a figure that still asks for ``dpi=72`` is drawn at 100 (its fonts,
being in points, grow with it). Nothing else changes: a figure made with a larger ``dpi`` keeps
it, and scripts outside IPython only get the rcParams.

Figures need no ``fig.tight_layout()`` under constrained layout (drop it; if one remains, that
figure switches to tight layout, and :func:`use` silences matplotlib's notice about the switch
so it does not become a cell output). ``fig.subplots_adjust()`` is ignored under constrained
layout: make such a figure with ``plt.figure(..., layout="none")``.
"""
from __future__ import annotations

from typing import Any

#: Smallest font size any course figure uses (points).
MIN_FONT_PT = 9
#: Resolution of course figures (dots per inch) on screen and in saved notebooks.
DPI = 100


def rc_params(dpi: int = DPI, font_size: float = 10) -> dict[str, Any]:
    """The course's rcParams: ``dpi`` for screen and files, text of ``font_size`` pt (ticks and
    legends one point smaller, never below :data:`MIN_FONT_PT`), constrained layout."""
    font_size = max(MIN_FONT_PT, font_size)
    small = max(MIN_FONT_PT, font_size - 1)
    return {
        "figure.dpi": dpi,
        "savefig.dpi": "figure",
        "figure.constrained_layout.use": True,
        "font.size": font_size,
        "axes.titlesize": font_size + 1,
        "axes.labelsize": font_size,
        "xtick.labelsize": small,
        "ytick.labelsize": small,
        "legend.fontsize": small,
        "legend.title_fontsize": font_size,
        "figure.titlesize": font_size + 1,
    }


def use(dpi: int = DPI, font_size: float = 10) -> None:
    """Apply the course style (call once per notebook, after ``import matplotlib.pyplot``).

    Sets :func:`rc_params` and, under IPython, renders inline figures at
    ``max(fig.dpi, dpi)``. Calling it again is harmless.
    """
    import warnings

    import matplotlib

    matplotlib.rcParams.update(rc_params(dpi, font_size))
    # An explicit fig.tight_layout() replaces constrained layout for that figure, which is what
    # the caller asked for; matplotlib's notice about it would otherwise become a cell output.
    warnings.filterwarnings("ignore", message="The figure layout has changed to tight")
    _min_dpi_inline(dpi)


def _min_dpi_inline(dpi: int) -> None:
    """Register a PNG formatter for Figures that prints at ``max(fig.dpi, dpi)``.

    The inline backend registers its own formatter when pyplot selects it, so pyplot is
    imported first; a later ``%matplotlib inline`` restores the default (fig.dpi) formatter.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure

    # matplotlib picks its backend lazily, at the first figure; the inline backend then registers
    # its own Figure formatter. Resolve it now (a throwaway figure), so ours comes last.
    plt.close(plt.figure())
    from matplotlib.figure import Figure

    def png(fig: Figure) -> bytes | None:
        return print_figure(fig, "png", bbox_inches="tight", dpi=max(float(fig.dpi), float(dpi)))

    formatters = shell.display_formatter.formatters
    formatters["image/png"].for_type(Figure, png)
    formatters["image/png"].enabled = True


__all__ = ["DPI", "MIN_FONT_PT", "rc_params", "use"]
