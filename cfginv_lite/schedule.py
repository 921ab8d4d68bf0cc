"""Noise schedules and timestep grids.

The schedule (betas, ``alphas_cumprod``) is taken from diffusers' :class:`DDIMScheduler`
built from a config, never re-derived by hand, so the digits model and Stable Diffusion
share exactly the numbers diffusers uses.

Notation (see ``docs``/notebooks): ``abar_t = prod_{s<=t} (1 - beta_s)``,
``a_t = sqrt(abar_t)``, ``b_t = sqrt(1 - abar_t)``.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import numpy as np
import torch

from .validation import check_int

#: Stable Diffusion 1.x schedule, as in its ``scheduler/scheduler_config.json``.
SD1_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

Spacing = Literal["linspace", "leading", "trailing"]
SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing")


def alphas_cumprod_from_config(config: Mapping[str, Any]) -> torch.Tensor:
    """``abar_t`` for ``t = 0 .. T-1`` (float64, CPU) from a diffusers scheduler config.

    Uses :class:`diffusers.DDIMScheduler` so that ``scaled_linear`` means
    ``beta_i = linspace(sqrt(beta_start), sqrt(beta_end), T)[i] ** 2`` exactly as diffusers
    computes it; the product is then taken in float64 for the solvers' coefficients.
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(dict(config))
    betas = scheduler.betas.to(torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def timestep_grid(
    steps: int,
    spacing: Spacing = "linspace",
    config: Mapping[str, Any] | None = None,
) -> list[int]:
    """Ascending grid of ``steps + 1`` integer noise levels, starting at level 0.

    Inversion walks the grid upwards (``ts[i] -> ts[i+1]``), sampling walks it downwards.

    * ``"linspace"``: the original notebook's ``int(linspace(0, T-1, steps + 1))``.
    * ``"leading"`` / ``"trailing"``: diffusers' ``DDIMScheduler.set_timesteps`` with that
      ``timestep_spacing`` (``steps_offset`` from the config), with level 0 prepended: in
      diffusers the last sampling step lands on ``alphas_cumprod[0]`` when
      ``set_alpha_to_one=False`` (as for SD), which is level 0 here. For SD's "leading"
      grid at 50 steps that is ``[0, 1, 21, ..., 981]``.
    """
    _check_steps(steps)
    config = dict(SD1_SCHEDULER_CONFIG if config is None else config)
    num_train = int(config.get("num_train_timesteps", 1000))
    if spacing == "linspace":
        if steps > num_train - 1:
            raise ValueError(f"steps={steps} exceeds the {num_train - 1} intervals of the schedule")
        return [int(v) for v in np.linspace(0, num_train - 1, steps + 1)]
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    from diffusers import DDIMScheduler

    if steps > num_train:
        raise ValueError(f"steps={steps} exceeds the schedule's {num_train} training timesteps")
    scheduler = DDIMScheduler.from_config(config, timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    # diffusers' "trailing" arange sometimes yields one extra level -1 (floating point, e.g. at
    # 61 steps: 62 levels); it is not a level of the schedule, so it is dropped.
    levels = sorted(int(t) for t in scheduler.timesteps if int(t) >= 0)
    if len(levels) != steps or len(set(levels)) != steps:
        raise ValueError(f"spacing {spacing!r} gives {len(set(levels))} distinct levels for steps={steps}; "
                         "use spacing 'linspace'")
    if levels[0] == 0:
        if int(config.get("steps_offset", 0)) == 0 and spacing == "leading":
            raise ValueError(f"spacing {spacing!r} with this config already starts at level 0; "
                             "set steps_offset=1 (as Stable Diffusion does) to use it")
        raise ValueError(f"spacing {spacing!r} with steps={steps} already lands on level 0 (it would appear twice); "
                         f"use at most {_max_steps(spacing, config)} steps, or spacing 'linspace'")
    if levels[-1] > num_train - 1:
        # "leading" adds steps_offset after spacing the levels: 1000 steps give 1..1000, past the last level.
        raise ValueError(f"spacing {spacing!r} with steps={steps} reaches level {levels[-1]}, beyond the schedule's "
                         f"last level {num_train - 1}; use at most {_max_steps(spacing, config)} steps")
    return [0, *levels]


def _max_steps(spacing: str, config: Mapping[str, Any]) -> int:
    """The largest step count for which ``spacing`` gives a valid grid (for the error messages)."""
    num_train = int(config.get("num_train_timesteps", 1000))
    offset = int(config.get("steps_offset", 0))
    if spacing == "leading":  # levels (0 .. steps-1) * (T // steps) + offset must stay <= T - 1
        return max(1, num_train - offset)
    # trailing: levels round(T - k T / steps) - 1; the lowest is round(T / steps) - 1 and must be >= 1
    steps = num_train
    while steps > 1 and round(num_train / steps) - 1 < 1:
        steps -= 1
    return steps


def _check_steps(steps: Any) -> None:
    check_int("steps", steps, minimum=1)
