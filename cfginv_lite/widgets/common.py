"""What the step views share: checking their arguments, naming methods, picking steps, and
taking the error curves they draw (precomputed, or from :func:`cfginv_lite.metrics.error_curves`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics import ErrorCurves, Reference, error_curves
from ..trace import Trace
from ..validation import check_bool, check_choice, check_int
from .png import CHANNEL_MODES

LEVEL_LABEL = "noise level t (after the step)"
DPI = 100  # the course style (cfginv_lite.style): readable at 100% zoom, fonts >= 9 pt
FONT = 9  # smallest font size in the views, points


def as_traces(traces: Trace | Sequence[Trace]) -> list[Trace]:
    """``traces`` as a non-empty list of :class:`~cfginv_lite.trace.Trace`, or a ``ValueError``."""
    if not isinstance(traces, Trace) and (isinstance(traces, (str, bytes)) or not hasattr(traces, "__iter__")):
        raise ValueError(f"traces must be a Trace or a list of Traces (TraceRecorder.finish()), "
                         f"got {type(traces).__name__}")
    out = [traces] if isinstance(traces, Trace) else list(traces)
    if not out:
        raise ValueError("need at least one Trace")
    for tr in out:
        if not isinstance(tr, Trace):
            raise ValueError(f"expected Trace objects (TraceRecorder.finish()), got {type(tr).__name__}")
    return out


def check_view_args(trs: Sequence[Trace], *, key: Any, image: Any, channels: Any, log_error: Any, dpi: Any,
                    decode: Any) -> int:
    """The arguments both views share; returns ``image`` as a checked int (negative counts from the end)."""
    if not isinstance(key, str):
        raise ValueError(f"key must be the name of a recorded tensor (a string), got {type(key).__name__}")
    batch = min(np.shape(tr.tensor(key))[1] for tr in trs)  # (steps, B, C, h, w); a missing key: Trace's message
    image = check_int("image", image, minimum=-batch, maximum=batch - 1)
    check_choice("channels", channels, CHANNEL_MODES)
    check_bool("log_error", log_error)
    check_int("dpi", dpi, minimum=10, maximum=1000)
    if decode is not None and not callable(decode):
        raise ValueError(f"decode must be a function of latents (or None), got {type(decode).__name__}")
    return image


def curves_to_draw(trs: Sequence[Trace], reference: Reference | list[Reference | None] | None,
                   curves: ErrorCurves | None, key: str) -> ErrorCurves:
    """Argument normalisation, not measurement: the views draw ``curves`` (checked against the
    traces) when given, else what :func:`~cfginv_lite.metrics.error_curves` makes of ``reference``."""
    if curves is None:
        return error_curves(trs, reference, key)
    if reference is not None:
        raise ValueError("give reference or curves (error_curves(traces, reference)), not both")
    if not isinstance(curves, ErrorCurves):
        raise ValueError(f"curves must come from metrics.error_curves, got {type(curves).__name__}")
    if len(curves.curves) != len(trs) or curves.key != key:
        raise ValueError(f"curves were made for {len(curves.curves)} traces' {curves.key!r}, "
                         f"not these {len(trs)} traces' {key!r}")
    for tr, c, r in zip(trs, curves.curves, curves.references):
        if (c is not None and len(c) != len(tr)) or (r is not None and len(r) != len(tr)):
            raise ValueError(f"curves do not match trace {tr.method!r} of {len(tr)} steps")
    return curves


def method_names(traces: Sequence[Trace]) -> list[str]:
    """Trace names, made unique so they can label rows and selector options."""
    names: list[str] = []
    for i, tr in enumerate(traces):
        name = tr.method or f"trace {i}"
        base, k = name, 2
        while name in names:
            name, k = f"{base} ({k})", k + 1
        names.append(name)
    return names


def pick(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices in ``range(n)`` that include the first and the last."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


__all__ = ["DPI", "FONT", "LEVEL_LABEL", "as_traces", "check_view_args", "curves_to_draw", "method_names", "pick"]
