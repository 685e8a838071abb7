"""``benchmarks/bench_soft.py`` in a tiny configuration: one row per block, ratios, report."""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path

import pytest
import torch

from soft_baselines import create, list_modules

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_soft.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_soft", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_soft"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_soft", None)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Oversubscribed threads on a shared machine make even tiny configurations slow.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rows(bench):
    return bench.run(sizes=(8, 16), batch=2, channels=64, warmup=0, repeats=1)


def test_one_row_per_block_and_size(rows):
    blocks = list_modules(kind="block")
    assert [(r.module, r.size) for r in rows] == [(n, s) for s in (8, 16) for n in blocks]
    for r in rows:
        assert not r.skipped
        assert r.params > 0 and r.repeats == 1 and r.ms > 0 and r.peak_mb > 0
        assert 0 <= r.gflops_fwd <= r.gflops_total


def test_ratios_against_nonlocal(rows):
    for r in rows:
        ref = next(x for x in rows if x.module == "nonlocal" and x.size == r.size)
        assert r.time_ratio == pytest.approx(r.ms / ref.ms)
        assert r.mem_ratio == pytest.approx(r.peak_mb / ref.peak_mb)
        if r.module == "nonlocal":
            assert r.time_ratio == 1.0 and r.mem_ratio == 1.0


@pytest.mark.parametrize("groups", [1, 4])
def test_counted_flops_match_hand_count(bench, groups):
    # 3x3 convolution: B * C_out * (C_in / groups) * 9 * H * W multiply-adds, 2 FLOPs each;
    # backward adds the input and weight gradients, each as costly as the forward (torch's
    # own formula counts the grouped weight gradient `groups` times too high).
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    fwd, total, _ = bench.count_flops(conv, x)
    assert fwd == 2 * 2 * 8 * (8 // groups) * 9 * 25
    assert total == 3 * fwd


def test_peak_memory_counts_saved_activations(bench):
    # Forward + backward of x * y with both requiring grad: out (freed after .sum()'s
    # backward starts), and the two input gradients live at the end: at least 2 buffers.
    x = torch.randn(64, 1024, requires_grad=True)
    nbytes = x.numel() * 4
    peak = bench.peak_memory_bytes(torch.nn.Identity(), x)
    assert 0 <= peak < 4 * nbytes  # identity: just the input gradient (plus tiny scalars)
    lin = torch.nn.Linear(1024, 1024, bias=False)
    peak = bench.peak_memory_bytes(lin, x)
    assert peak >= 2 * nbytes  # output + input gradient at least


def test_skips_configs_over_memory_limit(bench):
    rows = bench.run(
        sizes=(8, 16), batch=2, channels=64, modules=("nonlocal", "se"), repeats=1,
        warmup=0, mem_limit_gb=1e-4,
    )  # fmt: skip
    skipped = {(r.module, r.size) for r in rows if r.skipped}
    assert ("nonlocal", 16) in skipped
    assert all(s == 16 for _, s in skipped)
    assert all(math.isnan(r.time_ratio) for r in rows if r.size == 16)


def test_report_has_table_growth_and_targets(bench, rows):
    text = "\n".join(bench.format_report(rows))
    for name in list_modules(kind="block"):
        assert f"| {name} | 8×8 |" in text
    assert "Growth with H×W" in text
    assert "Targets at 64×64" in text
    for name in bench.TARGET_MODULES:
        assert f"- {name}: not measured" in text  # 64×64 not in this tiny run
    assert "not counted" in text
    # Target lines read met / MISSED once the target size is measured.
    fake = [
        bench.Row("nonlocal", 64, ms=100.0, peak_mb=100.0, time_ratio=1.0, mem_ratio=1.0),
        bench.Row("cc", 64, ms=20.0, peak_mb=30.0, time_ratio=0.2, mem_ratio=0.3),
    ]
    text = "\n".join(bench.format_report(fake))
    assert "- cc: time 0.200 met; memory 0.300 MISSED" in text


def test_timm_comparison_rows_and_report(bench):
    pytest.importorskip("timm")
    rows = bench.run_timm(sizes=(8,), batch=2, channels=16, modules=("se", "sk"), repeats=1)
    assert [(r.module, r.config) for r in rows] == [
        ("se", "equal"),
        ("se", "defaults"),
        ("sk", "equal"),
        ("sk", "defaults"),
    ]
    assert all(r.ms > 0 and r.timm_ms > 0 and r.ratio == r.ms / r.timm_ms for r in rows)
    text = "\n".join(bench.format_timm_report(rows))
    assert "| se | equal | 8×8 | 1 |" in text and "| sk | defaults | 8×8 | 1 |" in text
    fake = [
        bench.TimmRow.of("se", 64, [1.0, 1.0, 1.2], [2.0, 2.0, 2.0]),
        bench.TimmRow.of("sk", 64, [3.0, 3.0, 3.0], [2.0, 2.0, 2.0]),
        # ratio of medians 1.05, but a quarter of the pairs below 1: parity, not a miss
        bench.TimmRow.of("gc", 64, [1.05, 1.05, 0.9, 1.05, 1.3], [1.0, 1.0, 1.0, 1.0, 1.0]),
    ]
    assert fake[0].ms == 1000.0 and fake[0].repeats == 3
    text = "\n".join(bench.format_timm_report(fake))
    assert "| 0.500 | 0.500–0.600 | met |" in text
    assert "| 1.500 | 1.500–1.500 | MISSED |" in text
    assert "| 1.050 | 0.975–1.175 | parity (IQR spans 1) |" in text


def test_timm_pairs_run_until_each_side_had_its_minimum_time(bench):
    """``min_seconds`` adds calls beyond ``repeats`` until both sides ran that long."""
    instant = torch.nn.Identity()
    calls = {"n": 0}

    class Sleepy(torch.nn.Module):
        def forward(self, x):
            calls["n"] += 1
            time.sleep(0.002)
            return x * 1.0

    x = torch.randn(2, 3, requires_grad=True)
    a, b = bench.time_pair(Sleepy(), instant, x, warmup=0, repeats=2, min_seconds=0.03)
    assert len(a) == len(b) >= 15 and sum(a) >= 0.03 and calls["n"] == len(a)
    a, b = bench.time_pair(Sleepy(), instant, x, warmup=0, repeats=2)
    assert len(a) == len(b) == 2


def test_blocks_rejecting_a_size_are_skipped_with_their_reason(bench):
    rows = bench.run(sizes=(8,), batch=2, channels=16, modules=("psanet",), repeats=1, warmup=0)
    assert not rows[0].skipped  # 8 <= max_size
    big = create("psanet", 8).max_size[0] + 1  # one row more than its default max_size
    rows = bench.run(sizes=(big,), batch=1, channels=8, modules=("psanet",), repeats=1)
    assert rows[0].skipped.startswith("rejected by the block") and "max_size" in rows[0].skipped
