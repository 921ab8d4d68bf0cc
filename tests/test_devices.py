"""``devices.resolve_device``: the one device resolver every model and the CLI use."""
from __future__ import annotations

import pytest
import torch

import cfginv_lite as cl


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
@pytest.mark.parametrize("device, message", [("bogus", "invalid device 'bogus'"), ("cuda", "CUDA is not available"),
                                             ("meta", "cannot run a model"), (3.5, "must be a string")])
def test_one_device_resolver(device, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message) as info:
        cl.load_model("digits", device=device)
    assert "\n" not in str(info.value)
    from cfginv_lite import devices
    from cfginv_lite.models import stable_diffusion

    assert stable_diffusion.resolve_device is devices.resolve_device
