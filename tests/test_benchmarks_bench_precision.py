"""``benchmarks/bench_precision.py`` times what it says: the bf16 side really runs under
bf16 autocast with fp32 master weights, the fp32 side does not (timing itself is not
tested)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(_DIR))
    try:
        path = _DIR / "bench_precision.py"
        spec = importlib.util.spec_from_file_location("bench_precision", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(_DIR))
        sys.modules.pop("bench_ram", None)


def test_casting_runs_the_step_under_bf16_autocast_only_for_bf16(bench):
    layer = torch.nn.Linear(4, 3)
    seen = []

    def step():
        seen.append(layer(torch.randn(2, 4)).dtype)

    bench.casting(step, "bf16")()
    bench.casting(step, "fp32")()
    assert seen == [torch.bfloat16, torch.float32]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_soft_step_trains_fp32_weights_in_the_stated_memory_format(bench, precision, monkeypatch):
    monkeypatch.setattr(bench, "SOFT_SIZE", 12)
    monkeypatch.setattr(bench, "SOFT_BATCH", 4)
    monkeypatch.setattr(bench, "SOFT_WIDTHS", (4, 8))
    captured = {}
    real_build = bench.build_model

    def build(*args, **kwargs):
        captured["model"] = real_build(*args, **kwargs)
        return captured["model"]

    monkeypatch.setattr(bench, "build_model", build)
    step = bench.soft_step(precision)
    model = captured["model"]
    before = [p.detach().clone() for p in model.parameters()]
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    out_dtypes = []
    handle = conv.register_forward_hook(lambda m, i, o: out_dtypes.append(o.dtype))
    step()
    handle.remove()
    want = torch.bfloat16 if precision == "bf16" else torch.float32
    assert out_dtypes == [want]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    fmt = torch.channels_last if precision == "bf16" else torch.contiguous_format
    assert conv.weight.is_contiguous(memory_format=fmt)
