"""One device resolver for every model and the CLI.

``torch.device("bogus")`` raises a ``RuntimeError`` with torch internals in it, and a CUDA
device on a machine without CUDA only fails at the first ``.to()``, deep in a model, with a
35-line traceback. :func:`resolve_device` turns both into one clear ``ValueError`` up front.
"""
from __future__ import annotations

import torch

#: Device types this package runs on (anything else torch knows, e.g. "meta", cannot run a model).
DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda", "mps", "xpu")


def _available(kind: str) -> bool:
    if kind == "cpu":
        return True
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> ``"cuda"`` when available, else ``"cpu"``; refuse unknown or unavailable devices clearly.

    Raises ``ValueError`` (one line, no torch traceback) for a malformed name, an unsupported
    device type, a device that is not available (``"cuda"`` without a GPU or with a CPU-only
    torch build), or a device index beyond the installed GPUs.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda', or a torch.device, got {device!r}")
    try:
        resolved = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"invalid device {device!r}; use one of {', '.join(DEVICE_TYPES)} "
                         "(optionally with an index, e.g. 'cuda:0')") from None
    if resolved.type not in DEVICE_TYPES:
        raise ValueError(f"device {device!r} cannot run a model; use one of {', '.join(DEVICE_TYPES)}")
    if not _available(resolved.type):
        if resolved.type == "cuda":
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available to torch "
                f"{torch.__version__} (no GPU, or a CPU-only torch build). Use device='cpu' "
                "(slow: minutes per image for Stable Diffusion), or a GPU runtime such as Colab's T4."
            )
        name = {"mps": "Apple MPS", "xpu": "Intel XPU"}.get(resolved.type, resolved.type)
        raise ValueError(f"device={device!r} was requested but {name} is not available; use device='cpu'")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) "
                         f"exist (indices 0..{torch.cuda.device_count() - 1})")
    return resolved


__all__ = ["DEVICE_TYPES", "resolve_device"]
