"""``benchmarks/bench_ram.py``'s FLOP count and matmul peak (the timing itself is not tested)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_ram.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ram", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_ram"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_ram", None)


def test_step_flops_counts_forward_and_backward(bench):
    layer = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5, requires_grad=True)

    def step():
        layer(x).sum().backward()

    # forward 2*4*5*3, and the same again for each of the input's and the weight's gradients
    assert bench.step_flops(step) == 3 * 2 * 4 * 5 * 3


def test_matmul_gflops_is_a_positive_rate(bench):
    rate = bench.matmul_gflops(16, 16, 16, seconds=0.01)
    assert math.isfinite(rate) and rate > 0
