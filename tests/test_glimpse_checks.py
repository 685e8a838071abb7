"""glimpse.checks: argument checks written once."""

from __future__ import annotations

import numpy as np
import pytest

from glimpse.checks import check_positive_int


def test_check_positive_int_is_the_one_wording():
    """glimpse.checks.check_positive_int: one check (and one message) for the retina, the
    envs, the viz and the soft blocks."""
    assert check_positive_int("n", 3) == 3 and check_positive_int("n", np.int64(2)) == 2
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"^n must be a positive int, got "):
            check_positive_int("n", bad)
