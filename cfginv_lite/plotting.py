"""Deprecated alias of :mod:`cfginv_lite.presentation` (kept for notebooks' old imports)."""
from .presentation import image_rows, to_display  # noqa: F401
