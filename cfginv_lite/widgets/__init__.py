"""Step-by-step views of solver traces: a static montage and a kernel-free widget explorer.

Both views take one or more :class:`~cfginv_lite.trace.Trace` (recorded by a
:class:`~cfginv_lite.trace.TraceRecorder` passed as a solver's ``callback``) and the error
curves to draw, precomputed by :func:`cfginv_lite.metrics.error_curves` (``curves=``). For
convenience they also take the *reference* trajectory those curves measure against (the
latents the trace should have produced, e.g. the true sampling trajectory of a generated
image) and pass it to that function themselves. The error at a step is the RMSE between the
trace's latent and the reference latent **at the same noise level**. The views only draw.

* :func:`step_montage` (:mod:`.montage`) returns a plain matplotlib figure: it renders on
  GitHub, in nbval and on paper.
* :func:`step_explorer` (:mod:`.explorer`) returns an ipywidgets view whose frames are
  pre-rendered PNGs inside ``Stack`` containers, switched by ``jslink``-ed controls. Nothing runs
  in the kernel when the slider moves, so the view keeps working from a notebook saved with its
  widget state (``tools/execute_notebooks.py`` saves it): nbviewer, the static HTML of
  ``tools/build_html.py`` (widget renderer pinned, loaded from a CDN or bundled), and
  JupyterLab with a kernel but no cell run, once the notebook is trusted (JupyterLab renders
  widget outputs of untrusted notebooks as their text repr). In that last case ipywidgets marks
  every widget no kernel owns with a red "disconnected" chain icon; the explorer hides those
  icons inside itself, since its controls do work without the kernel.
* :func:`edit_explorer` (:mod:`.edit_explorer`) shows edits the same kernel-free way.

In Colab, call :func:`enable_colab_widgets` once (the notebooks' setup cell does).
"""
from __future__ import annotations

from .edit_explorer import EditExplorer, edit_explorer
from .explorer import StepExplorer, step_explorer
from .montage import step_montage


def enable_colab_widgets() -> bool:
    """Let Colab render ipywidgets 8 and tqdm progress bars: call once in a notebook's setup cell.

    Colab's built-in widget manager predates ipywidgets 8 and does not run ``jslink``; its
    "custom widget manager" (loaded from a CDN) does. Outside Colab this does nothing. Returns
    True if it was enabled.
    """
    try:
        from google.colab import output  # type: ignore[import-not-found]
    except ImportError:
        return False
    output.enable_custom_widget_manager()
    return True


__all__ = ["EditExplorer", "StepExplorer", "edit_explorer", "enable_colab_widgets", "step_explorer", "step_montage"]
