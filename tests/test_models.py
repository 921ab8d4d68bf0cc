"""``models.load_model``: the one entry point to every model."""
from __future__ import annotations

import pytest

import cfginv_lite as cl


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def test_load_model_unknown_keyword(monkeypatch):
    with pytest.raises(ValueError, match="device= and weights_dir="):
        cl.load_model("digits", dtype="fp16")
