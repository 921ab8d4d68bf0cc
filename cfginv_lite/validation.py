"""Argument checks shared by the whole package: one place, one wording.

Also the checks every solver makes of its inputs (latents, timestep grid) and of its output
(:class:`FiniteGuard`: non-finite latents found without a host sync per step).

Every public entry point (solvers, models, the CLI, the trainer) validates through these, so
the same bad value gets the same message everywhere. Numbers may be Python or numpy scalars
(``np.float32(0.9)``, ``np.int64(5)``; real numbers also a one-element tensor); ``bool`` is
refused even though it is an ``int`` subclass (``iterations=True`` is a bug, not 1), and so
are NaN and infinities. Every error is a ``ValueError`` that names the argument.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Collection, Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T")

#: Seeds are drawn with ``torch.Generator.manual_seed`` (and numpy's ``default_rng`` for real
#: digits), which together accept exactly the unsigned 64-bit range.
SEED_MAX = 2**64 - 1


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool is no Integral


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _is_real(value: Any) -> bool:
    if _is_bool(value):
        return False
    if isinstance(value, numbers.Real):  # int, float, np.float16/32/64, np.int*
        return True
    return (isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool
            and not value.is_complex())


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (Python or numpy) in ``[minimum, maximum]``; returned as ``int``."""
    if minimum is not None and maximum is not None:
        what = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        what = f"an integer >= {minimum}"
    elif maximum is not None:
        what = f"an integer <= {maximum}"
    else:
        what = "an integer"
    if not _is_integer(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {what}, got {number}")
    return number


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in ``[low, high]`` (open ends with ``low_open``/``high_open``); a ``float``."""
    if low is not None and high is not None:
        what = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        what = f" {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        what = f" {'<' if high_open else '<='} {high:g}"
    else:
        what = ""
    if not _is_real(value):
        raise ValueError(f"{name} must be a finite real number{what}, got {value!r}")
    x = float(value)
    ok = math.isfinite(x)
    if ok and low is not None:
        ok = x > low if low_open else x >= low
    if ok and high is not None:
        ok = x < high if high_open else x <= high
    if not ok:
        raise ValueError(f"{name} must be a finite real number{what}, got {x}")
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


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy booleans accepted; 0/1 and strings refused: ``"no"`` is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """One of ``choices`` (strings compared exactly)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def batch_labels(labels: Any, batch: int) -> torch.Tensor:
    """Timestep labels as a float32 ``(batch,)`` tensor: one label for every latent, or one for all."""
    labels = torch.as_tensor(labels, dtype=torch.float32).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(batch)
    if labels.numel() != batch:
        raise ValueError(f"{labels.numel()} timestep labels for a batch of {batch} latents")
    return labels


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed is an integer in ``[0, 2**64 - 1]`` (what torch's and numpy's generators accept)."""
    if not _is_integer(seed):
        raise ValueError(f"{name} must be an integer in [0, 2**64 - 1], got {seed!r}")
    if not 0 <= int(seed) <= SEED_MAX:
        raise ValueError(f"{name} must be an integer in [0, 2**64 - 1], got {int(seed)}"
                         + (" (too large: the random generators take 64-bit seeds)" if int(seed) > SEED_MAX else ""))
    return int(seed)


def as_prompt_list(prompts: Any, name: str = "prompts") -> list[str]:
    """A string is **one** prompt (``list("abc")`` would be three); otherwise a non-empty sequence of strings."""
    if isinstance(prompts, str):
        return [prompts]
    # Unordered or byte containers would give prompts in an arbitrary order or as ints.
    if isinstance(prompts, (bytes, bytearray, dict, set, frozenset, torch.Tensor)) or not hasattr(prompts, "__iter__"):
        raise ValueError(f"{name} must be a string or a list of strings, got {type(prompts).__name__}")
    items = list(prompts)
    if not items:
        raise ValueError(f"{name} is empty; need at least one prompt")
    bad = [type(p).__name__ for p in items if not isinstance(p, str)]
    if bad:
        raise ValueError(f"{name} must be strings, got {', '.join(sorted(set(bad)))} items")
    return items


def check_image_batch(images: Any, *, channels: int, what: str = "images") -> torch.Tensor:
    """The one image check both models share: a non-empty ``(B, C, H, W)`` float tensor in ``[-1, 1]``.

    Images in ``[0, 255]`` (or integer pixels) are the usual mistake: the models' convention
    is ``[-1, 1]`` (:func:`cfginv_lite.images.load_image` converts files and arrays).
    Shape details beyond ``B`` and ``C`` (the spatial size) are each model's own check.
    """
    hint = "use cfginv_lite.images.load_image for files, PIL images and arrays"
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor (B, {channels}, H, W) in [-1, 1], "
                         f"got {type(images).__name__}; {hint}")
    if images.ndim == 3:
        raise ValueError(f"{what} must be batched (B, {channels}, H, W), got {tuple(images.shape)}; use images[None]")
    if images.ndim != 4 or images.shape[1] != channels:
        extra = " (RGBA? composite it with load_image)" if images.ndim == 4 and images.shape[1] == 4 else ""
        raise ValueError(f"{what} must have shape (B, {channels}, H, W){extra}, got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{what} batch is empty (shape {tuple(images.shape)}); pass at least one image")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be floating point in [-1, 1], got dtype {images.dtype} "
                         f"(pixels in [0, 255]? {hint}, or pass x.float() / 127.5 - 1)")
    lo, hi = float(images.min()), float(images.max())
    if not (lo >= -1.001 and hi <= 1.001):  # also catches NaN; 1e-3 slack for resampling rounding
        raise ValueError(f"{what} must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}] "
                         "(pixels in [0, 255]? pass x / 127.5 - 1; in [0, 1]? pass x * 2 - 1; "
                         f"or {hint}, which scales them)")
    return images




# --------------------------------------------------------------------------- solver inputs and outputs
def check_latents(model: Any, latents: Any) -> torch.Tensor:
    """Clear errors for the wrong tensor type, dtype, shape, an empty batch or non-finite values.

    Any float dtype passes: the models cast latents to their own dtype and back.
    """
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if not latents.is_floating_point():
        raise ValueError(f"latents must be a floating-point tensor, got dtype {latents.dtype}")
    expected = tuple(model.latent_shape)
    if latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
        raise ValueError(
            f"latents must have shape (B, {', '.join(map(str, expected))}) for model "
            f"{model.name!r}, got {tuple(latents.shape)}"
        )
    if latents.shape[0] == 0:
        raise ValueError(f"latents batch is empty (shape {tuple(latents.shape)}); pass at least one latent")
    if latents.device.type == "meta":
        raise ValueError("latents are on the 'meta' device (a shape without data, e.g. from a model built with "
                         "device='meta'); create them on a real device, e.g. latents.to_empty(device='cpu') and fill "
                         "them, or model.encode(images)")
    if not torch.isfinite(latents).all():
        raise ValueError("latents contain NaN or infinite values")
    return latents


def check_grid(timesteps: Sequence[int], num_train_timesteps: int) -> list[int]:
    """A grid must be strictly increasing integer levels inside the schedule.

    Levels may be Python or numpy integers, integral floats or 0-d tensors (a tensor or an
    iterator works too); a fractional level is an error, never silently truncated.
    """
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
        raise ValueError(f"a timestep grid must be a sequence of integer levels, got {type(timesteps).__name__}")
    grid = [_grid_level(t) for t in timesteps]
    if len(grid) < 2:
        raise ValueError("a timestep grid needs at least 2 levels (steps >= 1)")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"timestep grid must be strictly increasing, got {grid}")
    if grid[0] < 0 or grid[-1] >= num_train_timesteps:
        raise ValueError(f"timestep grid must lie in [0, {num_train_timesteps - 1}], got {grid[0]}..{grid[-1]}")
    return grid


def _grid_level(t: Any) -> int:
    if isinstance(t, torch.Tensor) and t.numel() == 1:
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise ValueError(f"timestep grid levels must be integers, got {t!r}")
    if not math.isfinite(float(t)) or float(t) != int(t):
        raise ValueError(f"timestep grid levels must be integers, got {t!r} (fractional levels are not truncated)")
    return int(t)


class NonFiniteLatentError(ValueError):
    """A solver produced NaN or infinite latents (fp16 overflow, divergence)."""


class FiniteGuard:
    """Records the first step with non-finite latents *without* a host sync per step.

    The check stays on the device during the loop; :meth:`raise_if_bad` syncs once at the
    end and names the step, instead of returning a black or grey image.
    """

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.tensor(-1, device=device)

    def update(self, step: int, z: torch.Tensor) -> None:
        bad = ~torch.isfinite(z).all()
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def raise_if_bad(self, solver: str, grid: Sequence[int], direction: int) -> None:
        step = int(self.first_bad)
        if step >= 0:
            s, r = (grid[step], grid[step + 1]) if direction > 0 else (grid[-1 - step], grid[-2 - step])
            raise NonFiniteLatentError(
                f"{solver}: latents became NaN/inf at step {step} (level {s} -> {r}). "
                "In fp16 upcast the VAE/UNet to fp32, or lower the guidance scale."
            )


__all__ = [
    "as_prompt_list", "batch_labels", "check_choice", "check_fraction", "check_grid", "check_image_batch",
    "check_int", "check_latents", "check_optional_real", "check_positive", "check_real", "check_seed",
    "FiniteGuard", "NonFiniteLatentError", "SEED_MAX",
]
