"""Deprecated alias: every entry is in :data:`cfginv_lite.methods.METHODS` from the start.

Kept only so that ``import cfginv_lite.methods_compensation`` in older notebooks keeps
working; importing it registers nothing and is never needed.
"""
from .methods import METHODS  # noqa: F401
