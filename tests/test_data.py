"""``data``: digit labels and prompts."""
from __future__ import annotations

import numpy as np
import pytest
import torch


# --------------------------------------------------------------------------- bad input (issue 20; was tests/test_bad_input.py)
@pytest.mark.parametrize("label", [3.7, 10, -1, True])
def test_fractional_or_out_of_range_digit_labels_are_refused(label):
    from cfginv_lite.data import digit_prompt, real_digits

    with pytest.raises(ValueError, match="digit label must be an integer in \\[0, 9\\]"):
        digit_prompt(label)
    with pytest.raises(ValueError, match="digit label must be an integer in \\[0, 9\\]"):
        real_digits([1, label])
    assert digit_prompt(np.int64(3)) == digit_prompt(torch.tensor(3)) == "a handwritten digit three"
