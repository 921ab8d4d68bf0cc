"""Option checks shared by every solver: one place, one wording.

Numbers may be Python or numpy scalars (``np.float32(0.9)``, ``np.int64(5)``); ``bool`` is
refused even though it is an ``int`` subclass (``iterations=True`` is a bug, not 1), and so
are NaN and infinities. Every error is a ``ValueError`` that names the argument.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Collection, TypeVar

T = TypeVar("T")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool is no Integral


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer (Python or numpy) ``>= minimum``; returned as ``int``."""
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float:
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``); returned as ``float``."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    too_low = low is not None and (x <= low if low_open else x < low)
    if too_low or (high is not None and x > high):
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        raise ValueError(f"{name} must be {' and '.join(b for b in (lo, hi) if b)}, got {value!r}")
    return x


def check_positive(name: str, value: Any, *, allow_zero: bool = False, high: float | None = None) -> float:
    """A finite number ``> 0`` (``>= 0`` with ``allow_zero``), at most ``high``."""
    return check_real(name, value, low=0.0, high=high, low_open=not allow_zero)


def check_fraction(name: str, value: Any) -> float:
    """A number in ``[0, 1]``."""
    return check_real(name, value, low=0.0, high=1.0)


def check_optional_real(name: str, value: Any, **bounds: Any) -> float | None:
    """``None``, or :func:`check_real` with ``bounds``."""
    return None if value is None else check_real(name, value, **bounds)


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """One of ``choices`` (strings compared exactly)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


__all__ = ["check_choice", "check_fraction", "check_int", "check_optional_real", "check_positive", "check_real"]
