"""``agents.config``: the trainers' config checks (negative limits are refused)."""

from __future__ import annotations

import pytest

from agents.config import HardTrainConfig
from soft_baselines.train import SoftTrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["train_limit", "eval_limit"])
def test_negative_limits_raise(name):
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be >= 0"):
        HardTrainConfig(task="twodigit100", **{name: -1}).resolved()
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be >= 0"):
        SoftTrainConfig(dataset="twodigit100", **{name: -1}).resolved()
