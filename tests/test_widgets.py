"""The step montage (static) and the step explorer (pre-rendered, jslink-ed widgets)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from cfginv_lite.metrics import error_curve, error_curves
from cfginv_lite.trace import TraceRecorder
from cfginv_lite.widgets import StepExplorer, step_explorer, step_montage
from synthetic_traces import synthetic_trace as _trace

ipywidgets = pytest.importorskip("ipywidgets")


def _links(explorer: StepExplorer) -> set[tuple[int, str, int, str]]:
    return {(id(l.source[0]), l.source[1], id(l.target[0]), l.target[1]) for l in explorer.links}


# --------------------------------------------------------------------------- static montage
def test_montage_has_one_image_per_method_step_and_panel_plus_labelled_curve() -> None:
    a, b, ref = _trace("naive"), _trace("compensated", seed=1), _trace("ref", seed=2)
    fig = step_montage([a, b], ref, steps=[0, 2, 5])
    # 2 methods x (latent + error rows) x 3 steps, one curve axes, one colour bar
    assert len(fig.axes) == 2 * 2 * 3 + 2
    curve = next(ax for ax in fig.axes if ax.get_lines())
    assert "noise level" in curve.get_xlabel()
    assert "RMSE" in curve.get_ylabel() and "latent units" in curve.get_ylabel()
    assert {t.get_text() for t in curve.get_legend().get_texts()} == {"naive", "compensated"}
    row_labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith(("naive", "compensated"))]
    assert len(row_labels) == 4  # latent and error row per method
    colorbar = fig.axes[-1]
    assert "latent units" in colorbar.get_xlabel()
    # The course style: at least 100 dpi and 9 pt text everywhere (titles, labels, ticks, legend).
    assert fig.dpi >= 100
    fig.canvas.draw()
    sizes = {t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()}
    assert min(sizes) >= 9


def test_montage_row_labels_do_not_overlap_and_short_names_stay_whole() -> None:
    """A long method name (notebook 07's ``original-showcase``) is wrapped so that its rotated row
    label does not run into the next row's; names that fit (notebook 04's) are left unchanged."""
    names = ["naive", "original-showcase", "fixed-point", "null-text (lr 0.05)"]
    fig = step_montage([_trace(n, seed=k) for k, n in enumerate(names)], _trace("ref", seed=9), steps=[0, 2, 5])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the montage comes back closed: give it a canvas to lay out text
    canvas.draw()
    renderer = canvas.get_renderer()
    labelled = [ax for ax in fig.axes if ax.get_ylabel() and not ax.get_lines()]
    assert len(labelled) == 2 * len(names)
    boxes = sorted((ax.yaxis.label.get_window_extent(renderer) for ax in labelled), key=lambda b: -b.y1)
    for upper, lower in zip(boxes, boxes[1:]):
        assert lower.y1 <= upper.y0, f"row labels overlap: {upper} over {lower}"
    texts = [ax.get_ylabel() for ax in labelled]
    assert "naive\nlatent" in texts and "fixed-point\nerror" in texts
    assert "original-\nshowcase\nlatent" in texts


def test_montage_without_reference_falls_back_to_solver_residual_or_no_curve() -> None:
    plain = step_montage([_trace("a"), _trace("b")], max_columns=4)
    assert len(plain.axes) == 2 * 4 and not any(ax.get_lines() for ax in plain.axes)
    with_res = step_montage(_trace("c", residual=True), max_columns=3)
    curve = next(ax for ax in with_res.axes if ax.get_lines())
    assert "residual" in curve.get_ylabel() and curve.get_xlabel()
    with pytest.raises(ValueError, match="steps must lie"):
        step_montage(_trace("a"), steps=[99])


def test_montage_shows_four_channel_latents_as_rgb() -> None:
    sd = _trace("sd", shape=(1, 4, 16, 16))
    fig = step_montage(sd, sd, steps=[0, 1])
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert images[0].get_array().shape == (16, 16, 3)  # first 3 channels as RGB


def test_explorer_pools_large_latents_to_bound_the_notebook_size() -> None:
    sd = _trace("sd", steps=2, shape=(1, 4, 64, 64))
    ex = step_explorer(sd, sd, max_latent_px=16, panel_px=64)
    frame = ex.stacks[0].children[0]
    assert frame.height == "64"  # 64x64 pooled to 16x16, shown at 4x
    assert frame.width == str(3 * 64 + 2 * 4)  # latent | error | noise, 4 px gaps


# --------------------------------------------------------------------------- precomputed curves
def test_views_draw_the_curves_they_are_given() -> None:
    """The views only draw: curves precomputed by metrics.error_curves give the same figure as
    reference=, and the plotted values are the given ones, not recomputed."""
    a, b, ref = _trace("naive"), _trace("compensated", seed=1), _trace("ref", seed=2)
    errors = error_curves([a, b], ref)
    given = step_montage([a, b], curves=errors, steps=[0, 2, 5])
    from_ref = step_montage([a, b], ref, steps=[0, 2, 5])
    lines = lambda fig: [ln.get_ydata() for ax in fig.axes for ln in ax.get_lines()]  # noqa: E731
    assert len(given.axes) == len(from_ref.axes) and len(lines(given)) == 4  # a curve and its circles each
    for x, y in zip(lines(given), lines(from_ref)):
        np.testing.assert_array_equal(x, y)
    doubled = type(errors)(tuple(2 * c for c in errors.curves), errors.references, errors.measure, errors.key)
    np.testing.assert_array_equal(lines(step_montage([a, b], curves=doubled))[0], 2 * errors.curves[0])
    ex = step_explorer([a, b], curves=errors, max_frames=3)
    caption = ex.stacks[-2].children[0].value  # captions stack: the frame's RMSE per method
    assert f"RMSE {errors.curves[0][0]:.3g}" in caption and f"RMSE {errors.curves[1][0]:.3g}" in caption


def test_views_refuse_curves_that_do_not_fit_the_traces() -> None:
    a, b, ref = _trace("a"), _trace("b", seed=1), _trace("ref", seed=2)
    errors = error_curves([a, b], ref)
    with pytest.raises(ValueError, match="reference or curves"):
        step_montage([a, b], ref, curves=errors)
    with pytest.raises(ValueError, match="made for 2 traces"):
        step_explorer([a], curves=errors)
    with pytest.raises(ValueError, match="do not match trace"):
        step_montage([a, _trace("short", steps=3)], curves=errors)
    with pytest.raises(ValueError, match="curves must come from metrics.error_curves"):
        step_montage([a, b], curves=list(errors.curves))


# --------------------------------------------------------------------------- explorer
def test_explorer_layout_is_fixed_while_scrubbing_and_readable() -> None:
    a, b = _trace("naive", steps=20), _trace("compensated", steps=20, seed=1)
    ex = step_explorer([a, b], reference=_trace("ref", steps=20, seed=2))
    # A slider track of >= 12 px per step (the layout width includes a 44 px label and the readout).
    assert int(ex.slider.layout.width.rstrip("px")) - 100 >= 12 * 19
    # Captions change length from frame to frame: their box has a fixed size; so has the left column.
    captions = next(st for st in ex.stacks if isinstance(st.children[0], ipywidgets.HTML))
    assert captions.layout.width.endswith("px") and captions.layout.height.endswith("px")
    body = ex.widget.children[2]
    assert body.children[0].layout.width == captions.layout.width
    # Curve frames are rendered at the course resolution: 4.6 x 3.0 in at 100 dpi.
    curve = ex.stacks[-1].children[0]
    assert (int(curve.width), int(curve.height)) == (460, 300)
    # The "disconnected" chain icons of saved-state widgets are hidden inside the explorer only.
    assert "cfginv-step-explorer" in ex.widget._dom_classes
    legend = ex.widget.children[-1].value
    assert ".cfginv-step-explorer .jupyter-widgets-disconnected::before" in legend and "grey ±" in legend


def test_explorer_legend_says_rgb_for_colour_latents_and_header_fits_one_line() -> None:
    sd = _trace("sd", steps=3, shape=(1, 4, 32, 32))
    ex = step_explorer(sd, sd, panel_px=96)
    legend = ex.widget.children[-1].value
    assert "grey" not in legend and "channels 1-3 as RGB" in legend
    header = ex.widget.children[2].children[0].children[1].children[0].children[1].value
    assert "white-space:nowrap" in header and "error vs ref." in header  # 96 px panels: the short name


def test_enable_colab_widgets_is_a_no_op_outside_colab() -> None:
    from cfginv_lite.widgets import enable_colab_widgets

    assert enable_colab_widgets() is False


def test_explorer_slider_spans_steps_and_jslinks_every_stack() -> None:
    a, b = _trace("naive", steps=7), _trace("compensated", steps=7, seed=1, residual=True)
    ex = step_explorer([a, b], reference=_trace("ref", steps=7, seed=2))
    assert ex.slider.min == 0 and ex.slider.max == len(a) - 1 == 6
    assert ex.play.max == ex.slider.max
    links = _links(ex)
    assert (id(ex.play), "value", id(ex.slider), "value") in links
    frame_stacks = [st for st in ex.stacks if len(st.children) == len(a)]
    assert len(frame_stacks) == 2 + 2  # one per method, captions, error curve
    for st in frame_stacks:
        assert isinstance(st, ipywidgets.Stack)
        assert (id(ex.slider), "value", id(st), "selected_index") in links
    assert all(isinstance(l, ipywidgets.widgets.widget_link.Link) for l in ex.links)  # jslink, not observe
    assert ex.selector.options == ("naive", "compensated", "all methods")
    view_stack = next(st for st in ex.stacks if len(st.children) == 3)
    assert (id(ex.selector), "index", id(view_stack), "selected_index") in links


def test_explorer_frames_are_small_pngs_capped_by_max_frames() -> None:
    long = _trace("long", steps=120, shape=(1, 1, 8, 8))
    ex = step_explorer([long, _trace("short", steps=30, shape=(1, 1, 8, 8))], reference=long, max_frames=20)
    assert len(ex.frame_steps) == 20 and ex.frame_steps[0] == 0 and ex.frame_steps[-1] == 119
    assert ex.slider.max == 19 and ex.slider.description == "frame"
    images = [im for st in ex.stacks for im in st.children if isinstance(im, ipywidgets.Image)]
    assert len(images) == 20 * 3  # 2 methods + the curve
    assert all(bytes(im.value[:4]) == b"\x89PNG" and len(im.value) < 12_000 for im in images)
    with pytest.raises(ValueError, match="max_frames"):
        step_explorer(long, max_frames=0)


def test_explorer_repr_is_short_and_deterministic_for_nbval() -> None:
    ex = step_explorer(_trace("naive", steps=3))
    bundle = ex._repr_mimebundle_()
    assert bundle["text/plain"] == "StepExplorer(methods=['naive'], frames=3)"
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id


class _ToyModel:
    """A protocol-conforming stand-in (no diffusers import, which alone costs ~10 s on 2 cores)."""

    name = "toy"
    latent_shape = (1, 8, 8)

    def __init__(self) -> None:
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([[[float(len(p))]] for p in prompts])  # "" -> 0: the unconditional branch

    def predict_noise(self, z: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return torch.tanh(0.8 * z + 0.1 * emb.view(-1, 1, 1, 1) * (1 + labels.view(-1, 1, 1, 1) / 1000))


def test_explorer_and_montage_on_real_solver_traces() -> None:
    from cfginv_lite import invert_naive, make_guidance, sample_ddim, timestep_grid

    model = _ToyModel()
    guidance = make_guidance(model, ["a seven"], 3.0)
    grid = timestep_grid(4)
    ref = TraceRecorder("sampling", keep=("latent", "latent_prev"))
    gen = torch.Generator().manual_seed(0)
    x0 = sample_ddim(model, torch.randn(1, 1, 8, 8, generator=gen), grid, guidance, callback=ref, progress=False)
    ref = ref.finish()
    rec = TraceRecorder("naive", keep=("latent", "noise"))
    invert_naive(model, x0, grid, guidance, callback=rec, progress=False)
    naive = rec.finish()
    curve = error_curve(naive, ref)
    assert curve.shape == (4,) and np.isfinite(curve).all() and curve[-1] > 0
    assert np.array_equal(error_curve(ref, ref), np.zeros(4))
    ex = step_explorer([naive], ref, decode=lambda z: z.clip(-1, 1))
    assert ex.slider.max == 3
    assert len(step_montage(naive, ref).axes) == 2 * 4 + 2


def test_edit_explorer_links_source_and_target_to_prerendered_panels() -> None:
    from cfginv_lite.widgets import edit_explorer

    rng = np.random.default_rng(0)
    src_lab, tgt_lab = [0, 0, 1, 1], [1, 2, 0, 2]
    imgs = rng.uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    edits = {"naive": {0.0: imgs, 1.0: -imgs}, "anderson": {0.0: imgs}}
    ok = {m: {t: np.array([True, False, True, False]) for t in e} for m, e in edits.items()}
    ex = edit_explorer(imgs, src_lab, tgt_lab, edits, ok, {"naive": imgs, "anderson": imgs})
    assert ex.taus == [0.0, 1.0] and ex.methods == ["naive", "anderson"]
    outer = ex.stacks[-1]
    assert len(outer.children) == 3 and all(len(st.children) == 3 for st in ex.stacks[:-1])
    assert len(ex.links) == 1 + 3
    assert "no image" in outer.children[2].children[2].value  # 2 -> 2: nothing edited from a 2
    assert repr(ex).startswith("EditExplorer(")


# --------------------------------------------------------------------------- bad input (issue 20; was tests/test_bad_input.py)
@pytest.fixture(scope="module")
def trace():
    return _trace("a")   # 6 steps, a batch of 2 images


@pytest.mark.parametrize("kwargs, name", [
    (dict(image=5), "image"), (dict(image=1.5), "image"), (dict(steps=[1.5]), "steps"), (dict(steps=[9]), "steps"),
    (dict(dpi=0), "dpi"), (dict(cell_inches=-1), "cell_inches"), (dict(channels="bogus"), "channels"),
    (dict(max_columns=0), "max_columns"), (dict(log_error="yes"), "log_error"), (dict(decode="clip"), "decode"),
])
def test_step_montage_checks_its_arguments(trace, kwargs, name):
    from cfginv_lite.widgets import step_montage

    with pytest.raises(ValueError, match=name):
        step_montage(trace, **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(image=5), "image"), (dict(max_frames=2.5), "max_frames"), (dict(max_latent_px=0), "max_latent_px"),
    (dict(panel_px=0), "panel_px"), (dict(interval_ms=0), "interval_ms"), (dict(dpi=0), "dpi"),
    (dict(channels="bogus"), "channels"),
])
def test_step_explorer_checks_its_arguments(trace, kwargs, name):
    pytest.importorskip("ipywidgets")
    from cfginv_lite.widgets import step_explorer

    with pytest.raises(ValueError, match=name):
        step_explorer(trace, **kwargs)


def test_widgets_refuse_a_non_trace():
    from cfginv_lite.widgets import step_montage

    with pytest.raises(ValueError, match="traces must be a Trace"):
        step_montage(None)


_SRC = np.zeros((2, 1, 8, 8))


@pytest.mark.parametrize("kwargs, name", [
    (dict(zoom=0), "zoom"),
    (dict(edits={"m": {0.5: np.zeros((1, 1, 8, 8))}}), r"edits\['m'\]\[0.5\] must have the shape"),
    (dict(edits={"m": [np.zeros((2, 1, 8, 8))]}), r"edits\['m'\] must be a dict"),
    (dict(source_labels=[1.5, 2]), "source_labels must be whole numbers"),
    (dict(success={"m": {0.5: np.zeros(1)}}), r"success\['m'\]\[0.5\] must hold one flag per image"),
    (dict(reconstructions={"x": _SRC}), r"reconstructions\['m'\] must be given"),
])
def test_edit_explorer_checks_its_arguments(kwargs, name):
    pytest.importorskip("ipywidgets")
    from cfginv_lite.widgets import edit_explorer

    args = dict(sources=_SRC, source_labels=[1, 2], target_labels=[2, 1], edits={"m": {0.5: _SRC}}) | kwargs
    with pytest.raises(ValueError, match=name):
        edit_explorer(**args)
