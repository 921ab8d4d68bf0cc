"""Timestep grids (``schedule.timestep_grid``): every grid it returns is valid, and the ones it cannot make are refused clearly."""
from __future__ import annotations

import pytest

import cfginv_lite as cl
from cfginv_lite.validation import check_grid


# --------------------------------------------------------------------------- bad input (issue 10; was tests/test_robustness.py)
def test_leading_grid_of_1000_steps_is_refused_clearly():
    with pytest.raises(ValueError, match="at most 999 steps"):
        cl.timestep_grid(1000, "leading")
    assert check_grid(cl.timestep_grid(999, "leading"), 1000)[-1] == 999


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_every_grid_timestep_grid_returns_is_valid(spacing):
    for steps in [1, 2, 3, 7, 20, 50, 61, 103, 121, 122, 201, 397, 500, 666, 998, 999, 1000]:
        try:
            grid = cl.timestep_grid(steps, spacing)
        except ValueError as err:
            assert "at most" in str(err) or "exceeds" in str(err)
            continue
        assert len(grid) == steps + 1 and check_grid(grid, 1000) == grid


def test_trailing_spacing_never_yields_level_minus_one():
    grid = cl.timestep_grid(61, "trailing")   # diffusers' trailing arange adds a level -1 here
    assert len(grid) == 62 and min(grid) == 0 and check_grid(grid, 1000) == grid


def test_trailing_overflow_message_is_about_steps_not_steps_offset():
    with pytest.raises(ValueError, match="at most 666 steps") as info:
        cl.timestep_grid(700, "trailing")
    assert "steps_offset" not in str(info.value)
