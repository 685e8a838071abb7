"""Soft-attention cost: latency, peak memory, parameters and FLOPs of every registered block.

Usage::

    python benchmarks/bench_soft.py [--threads 1] [--device cpu|cuda] [--sizes 16 32 64 96]
        [--timm | --no-timm] [--timm-sizes 32 64] [--modules se eca ...]

Every module of kind ``"block"`` in :mod:`soft_baselines` is built with its **default
constructor arguments** (``create(name, C)``; ``nonlocal`` is therefore the
``embedded_gaussian`` form, no sub-sampling) in training mode, and run on a
``(B, C, H, W)`` input (default ``B=8, C=64``, ``H=W`` in ``--sizes``) that requires grad,
with the loss ``out.sum()``. Per module and size it reports:

- ``params``: trainable parameters.
- ``GFLOPs fwd`` / ``fwd+bwd``: floating-point operations **counted** by
  :class:`torch.utils.flop_counter.FlopCounterMode` (one multiply-add = 2 FLOPs). It only
  counts matrix products, convolutions and attention kernels (``mm``, ``bmm``, ``addmm``,
  ``baddbmm``, ``convolution`` and their backward, SDPA; the grouped-convolution backward
  formula is replaced by a corrected one, see ``_conv_backward_flop``); elementwise ops,
  reductions,
  softmax, normalisation and pooling are *not* counted. The footnote lists the
  compute ops that actually ran and were not counted.
- ``ms fwd+bwd``: median wall time of forward + backward over ``--repeats`` calls (after
  ``--warmup`` calls; fewer repeats when one configuration exceeds ``--max-seconds``).
- ``peak MB``: peak *extra* tensor memory during one forward + backward: on CPU, the
  running sum of every allocation and free that PyTorch's CPU allocator reports to
  ``torch.profiler`` (``profile_memory=True``), in time order, maximised; on CUDA,
  ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the call. It
  starts from zero with the module, its parameters and the input already allocated and all
  ``.grad`` set to ``None``, so it covers activations saved for backward, temporaries,
  and the gradients of the input and parameters. Memory held by libraries outside
  PyTorch's allocator (e.g. oneDNN/BLAS scratch buffers) and allocator caching are not
  included. Cross-check (torch 2.15, CPU): for ``nonlocal`` at 64×64 this gives 1548 MB
  and the process's peak-RSS increase over the same call (``ru_maxrss``) 1558 MB. On CPU
  with gradients, ``nonlocal``'s ``scaled_dot_product_attention`` runs the math path
  (``bmm`` + softmax), so its ``N × N`` weights are materialised; on CUDA fused kernels
  avoid that and its memory grows far slower.
- ``time/nonlocal``, ``mem/nonlocal``: ratio to ``nonlocal`` at the same size, same run.

Configurations whose estimated peak exceeds ``--mem-limit-gb`` are skipped (and listed):
the estimate is the module's peak at the previous size scaled by ``(N / N_prev)^2``,
``N = H*W`` (the worst case, quadratic growth).

Configurations a block rejects (e.g. ``psanet`` above its ``max_size``) are listed as
skipped with the block's message.

``--timm`` (default on when timm is installed) adds a second table: every block that timm
also implements (``se``, ``eca``, ``cbam``, ``gc``, ``nonlocal``, ``sk``) against timm's, in
the equal configuration of ``tests/reference/timm_blocks.py`` (weights copied across, so
both compute the same function), forward + backward in training mode, the two timed in
alternation in the same run (median of ``--repeats`` each); the target is a ratio
Glimpse / timm ≤ 1.

After the table: how cost grows with ``H*W`` (ratios between consecutive sizes, and the
exponent ``k`` of ``cost ∝ N^k`` between two sizes), then the target check at 64×64:
``cc``, ``a2``, ``cgnl``, ``gc``, ``ema`` and ``isa`` should each take at most 1/4 of
non-local's peak memory and time.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import setup_device
from soft_baselines import create, list_modules

REFERENCE = "nonlocal"
# Glimpse name -> timm's attention-type name.
TIMM_NAMES = {"se": "se", "eca": "eca", "cbam": "cbam", "gc": "gc", "nonlocal": "nl", "sk": "sk"}
TARGET_MODULES = ("cc", "a2", "cgnl", "gc", "ema", "isa")
TARGET_SIZE = 64
TARGET_RATIO = 0.25

# Ops that move or describe data but compute nothing worth counting as FLOPs; everything
# else that runs and is not in FlopCounterMode's registry is listed as "not counted".
_NO_COMPUTE = {
    "_to_copy",
    "_unsafe_view",
    "alias",
    "as_strided",
    "cat",
    "clone",
    "contiguous",
    "copy_",
    "detach",
    "empty",
    "empty_like",
    "empty_strided",
    "expand",
    "fill_",
    "full",
    "full_like",
    "lift_fresh",
    "new_empty",
    "new_empty_strided",
    "new_full",
    "new_ones",
    "new_zeros",
    "ones",
    "ones_like",
    "permute",
    "promote_types",
    "repeat",
    "reshape",
    "scalar_tensor",
    "select",
    "select_backward",
    "slice",
    "slice_backward",
    "split",
    "split_with_sizes",
    "squeeze",
    "stack",
    "t",
    "transpose",
    "unbind",
    "unfold",
    "unsqueeze",
    "view",
    "zero_",
    "zeros",
    "zeros_like",
}


@dataclass
class Row:
    """One (module, size) measurement; ``skipped`` holds the reason when not measured."""

    module: str
    size: int
    params: int = 0
    gflops_fwd: float = math.nan
    gflops_total: float = math.nan
    ms: float = math.nan
    repeats: int = 0
    peak_mb: float = math.nan
    time_ratio: float = math.nan
    mem_ratio: float = math.nan
    uncounted_ops: set[str] = field(default_factory=set)
    skipped: str = ""


class _OpRecorder(TorchDispatchMode):
    """Records the names of the aten ops that run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fwd_bwd(module: torch.nn.Module, x: torch.Tensor) -> None:
    module(x).sum().backward()


def _clear_grads(module: torch.nn.Module, x: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    x.grad = None


def _conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape=None,
    **kwargs,
) -> int:
    """FLOPs of ``aten.convolution_backward``, grouped convolutions included.

    The input gradient and the weight gradient each take as many multiply-adds as the
    forward convolution. FlopCounterMode's own formula ignores ``groups`` for the weight
    gradient and counts it ``groups`` times too high (in torch 2.15: 34x the forward
    instead of 3x for fwd+bwd of a 32-group conv), which would inflate ``sk`` ~10x.
    """
    spatial = (x_shape if transposed else grad_out_shape)[2:]
    forward = 2 * x_shape[0] * math.prod(w_shape) * math.prod(spatial)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, int, set[str]]:
    """Counted FLOPs of forward and of forward + backward, and the compute ops not counted."""
    _clear_grads(module, x)
    recorder = _OpRecorder()
    counter = FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop},
    )
    with counter, recorder:
        out = module(x)
        fwd = counter.get_total_flops()
        out.sum().backward()
        total = counter.get_total_flops()
    counted = {str(k).split(".")[-1] for k in counter.flop_registry}
    uncounted = {op for op in recorder.ops if op not in counted and op not in _NO_COMPUTE}
    return fwd, total, uncounted


def peak_memory_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Peak extra tensor memory (bytes) during one forward + backward; see the module doc."""
    _clear_grads(module, x)
    device = x.device
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _fwd_bwd(module, x)
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _fwd_bwd(module, x)
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()  # negative for frees
        peak = max(peak, live)
    return peak


def time_fwd_bwd(
    module: torch.nn.Module, x: torch.Tensor, warmup: int, repeats: int, max_seconds: float
) -> tuple[float, int]:
    """Median seconds of forward + backward and the number of timed calls.

    Stops early (after at least one timed call) once the timed calls add up to
    ``max_seconds``.
    """
    for _ in range(warmup):
        _clear_grads(module, x)
        _fwd_bwd(module, x)
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < max_seconds):
        _clear_grads(module, x)
        _sync(x.device)
        t0 = time.perf_counter()
        _fwd_bwd(module, x)
        _sync(x.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def run(
    sizes: tuple[int, ...] = (16, 32, 64, 96),
    batch: int = 8,
    channels: int = 64,
    modules: tuple[str, ...] | None = None,
    device: torch.device | str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
    max_seconds: float = 20.0,
    mem_limit_gb: float = 6.0,
) -> list[Row]:
    """Measure every block (or ``modules``) at every size; returns one :class:`Row` each.

    Ratios to ``nonlocal`` are filled in when ``nonlocal`` was measured at that size.
    """
    device = torch.device(device)
    names = list(modules) if modules is not None else list_modules(kind="block")
    rows: list[Row] = []
    last_peak: dict[str, tuple[int, float]] = {}  # module -> (N, peak bytes)
    for size in sizes:
        n = size * size
        for name in names:
            row = Row(name, size)
            rows.append(row)
            if name in last_peak:
                n_prev, peak_prev = last_peak[name]
                estimate = peak_prev * (n / n_prev) ** 2
                if estimate > mem_limit_gb * 2**30:
                    row.skipped = (
                        f"estimated peak {estimate / 2**30:.1f} GB > {mem_limit_gb:g} GB limit"
                    )
                    continue
            torch.manual_seed(0)
            module = create(name, channels).to(device).train()
            x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
            row.params = sum(p.numel() for p in module.parameters() if p.requires_grad)
            try:
                fwd, total, row.uncounted_ops = count_flops(module, x)
            except ValueError as err:  # the block rejects this input (e.g. psanet max_size)
                row.skipped = f"rejected by the block: {err}"
                continue
            row.gflops_fwd, row.gflops_total = fwd / 1e9, total / 1e9
            peak = peak_memory_bytes(module, x)
            row.peak_mb = peak / 2**20
            last_peak[name] = (n, peak)
            seconds, row.repeats = time_fwd_bwd(module, x, warmup, repeats, max_seconds)
            row.ms = seconds * 1e3
            del module, x
    by_key = {(r.module, r.size): r for r in rows}
    for r in rows:
        ref = by_key.get((REFERENCE, r.size))
        if r.skipped or ref is None or ref.skipped:
            continue
        r.time_ratio = r.ms / ref.ms
        r.mem_ratio = r.peak_mb / ref.peak_mb if ref.peak_mb > 0 else math.nan
    return rows


@dataclass
class TimmRow:
    """One block against timm's at one size (same function, same run).

    ``ms`` and ``timm_ms`` are medians; ``ratio_q1``/``ratio_q3`` the quartiles of the
    per-pair ratios (each Glimpse call over the timm call right after it), the run's noise.
    """

    module: str
    size: int
    ms: float
    timm_ms: float
    repeats: int
    config: str = "equal"
    ratio_q1: float = math.nan
    ratio_q3: float = math.nan

    @classmethod
    def of(
        cls, module: str, size: int, a: list[float], b: list[float], config: str = "equal"
    ) -> TimmRow:
        """From :func:`time_pair`'s two lists of seconds."""
        pairs = sorted(x / y for x, y in zip(a, b, strict=True))
        q1, _, q3 = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else pairs * 3
        return cls(
            module,
            size,
            statistics.median(a) * 1e3,
            statistics.median(b) * 1e3,
            len(a),
            config,
            q1,
            q3,
        )

    @property
    def ratio(self) -> float:
        return self.ms / self.timm_ms

    @property
    def verdict(self) -> str:
        """``met`` (ratio ≤ 1), ``parity`` (above 1 but the pairs' interquartile range
        reaches below 1: not distinguishable from equal in this run) or ``MISSED``."""
        if self.config != "equal":
            return "—"
        if self.ratio <= 1.0:
            return "met"
        return "parity (IQR spans 1)" if self.ratio_q1 <= 1.0 else "MISSED"


def time_pair(
    a: torch.nn.Module,
    b: torch.nn.Module,
    x: torch.Tensor,
    warmup: int,
    repeats: int,
    min_seconds: float = 0.0,
) -> tuple[list[float], list[float]]:
    """Seconds of forward + backward of ``a`` and of ``b``, timed in alternation
    (``a, b, a, b, ...``) so that load changes during the run hit both alike: at least
    ``repeats`` pairs, and more until each side has run ``min_seconds`` (a few-millisecond
    block needs hundreds of calls before a 2 % difference stands out of the noise)."""
    for _ in range(warmup):
        for m in (a, b):
            _clear_grads(m, x)
            _fwd_bwd(m, x)
    times: tuple[list[float], list[float]] = ([], [])
    while len(times[0]) < repeats or min(sum(times[0]), sum(times[1])) < min_seconds:
        for m, out in ((a, times[0]), (b, times[1])):
            _clear_grads(m, x)
            _sync(x.device)
            t0 = time.perf_counter()
            _fwd_bwd(m, x)
            _sync(x.device)
            out.append(time.perf_counter() - t0)
    return times


def run_timm(
    sizes: tuple[int, ...] = (32, 64),
    batch: int = 8,
    channels: int = 64,
    modules: tuple[str, ...] | None = None,
    device: torch.device | str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
    defaults: bool = True,
    min_seconds: float = 0.0,
) -> list[TimmRow]:
    """Every block timm also has (or those in ``modules``) against timm's, per size.

    Needs timm; the pairs and weight mappings are ``tests/reference/timm_blocks.py``.
    ``defaults`` adds, per pair, each library's block with its *own* defaults (timm's
    ``create_attn(name, C)``, Glimpse's ``create(name, C)``): not the same function (see
    ``DIFFERENCES`` there), but what each gives for the name.
    """
    from tests.reference.timm_blocks import PAIRS

    device = torch.device(device)
    rows = []
    for size in sizes:
        for name, (kwargs, to_timm) in PAIRS.items():
            if modules is not None and name not in modules:
                continue
            torch.manual_seed(0)
            ours = create(name, channels, **kwargs).to(device).train()
            theirs = to_timm(ours).train()
            x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
            a, b = time_pair(ours, theirs, x, warmup, repeats, min_seconds)
            rows.append(TimmRow.of(name, size, a, b))
            if defaults:
                from timm.layers import create_attn

                torch.manual_seed(0)
                ours = create(name, channels).to(device).train()
                theirs = create_attn(TIMM_NAMES[name], channels).to(device).train()
                a, b = time_pair(ours, theirs, x, warmup, repeats, min_seconds)
                rows.append(TimmRow.of(name, size, a, b, "defaults"))
            del ours, theirs, x
    return rows


def format_timm_report(rows: list[TimmRow]) -> list[str]:
    """Markdown table of :func:`run_timm` and the target check (ratio ≤ 1)."""
    lines = [
        "| module | config | H×W | calls | Glimpse ms fwd+bwd | timm ms fwd+bwd |"
        " Glimpse / timm | pairs' IQR | ≤ 1 (equal config) |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r.module} | {r.config} | {r.size}×{r.size} | {r.repeats} | {r.ms:.1f} | "
            f"{r.timm_ms:.1f} | {r.ratio:.3f} | {r.ratio_q1:.3f}–{r.ratio_q3:.3f} | "
            f"{r.verdict} |"
        )
    lines += [
        "",
        "equal: the same function on both sides (weights copied by "
        "tests/reference/timm_blocks.py); defaults: each library's own defaults for the "
        "name (different functions, e.g. timm's SK splits the input across paths and uses "
        "dense convs, Glimpse's is the paper's grouped form inside a residual block). "
        "Training mode, the two timed in alternation; Glimpse / timm is the ratio of the "
        "medians, the IQR that of the per-pair ratios.",
    ]
    return lines


def _fmt(v: float, spec: str) -> str:
    return "—" if math.isnan(v) else format(v, spec)


def _growth(a: float, b: float) -> float:
    return b / a if a > 0 and not math.isnan(a) and not math.isnan(b) else math.nan


def format_report(rows: list[Row], growth_pair: tuple[int, int] | None = None) -> list[str]:
    """Markdown lines: the main table, skipped configurations, growth, targets, footnotes."""
    lines = [
        "| module | H×W | params | GFLOPs fwd | GFLOPs fwd+bwd | ms fwd+bwd (n) | peak MB |"
        " time/nonlocal | mem/nonlocal |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        if r.skipped:
            continue
        lines.append(
            f"| {r.module} | {r.size}×{r.size} | {r.params:,} | {r.gflops_fwd:.4g} | "
            f"{r.gflops_total:.4g} | {r.ms:.1f} ({r.repeats}) | {r.peak_mb:.1f} | "
            f"{_fmt(r.time_ratio, '.3f')} | {_fmt(r.mem_ratio, '.3f')} |"
        )
    skipped = [r for r in rows if r.skipped]
    if skipped:
        lines += ["", "Skipped (not run):"]
        lines += [f"- {r.module} at {r.size}×{r.size}: {r.skipped}" for r in skipped]

    sizes = sorted({r.size for r in rows})
    by_key = {(r.module, r.size): r for r in rows if not r.skipped}
    modules = list(dict.fromkeys(r.module for r in rows))
    if len(sizes) >= 2:
        if growth_pair is None or not set(growth_pair) <= set(sizes):
            growth_pair = (32, 64) if {32, 64} <= set(sizes) else (sizes[-2], sizes[-1])
        a, b = growth_pair
        steps = list(itertools.pairwise(sizes))
        step_names = ", ".join(f"{s}→{t}" for s, t in steps)
        n_factor = (b / a) ** 2
        lines += [
            "",
            f"Growth with H×W: cost ratio between consecutive sizes ({step_names}); "
            f"k is the exponent of cost ∝ (H·W)^k from {a}×{a} to {b}×{b} "
            f"(H·W grows {n_factor:g}×: k≈1 linear, k≈2 quadratic).",
            "",
            "| module | GFLOPs fwd+bwd × | time × | peak mem × | k FLOPs | k time | k mem |",
            "|" + "---|" * 7,
        ]

        def ratios(name: str, attr: str) -> str:
            out = []
            for s, t in steps:
                r0, r1 = by_key.get((name, s)), by_key.get((name, t))
                g = _growth(getattr(r0, attr), getattr(r1, attr)) if r0 and r1 else math.nan
                out.append(_fmt(g, ".1f"))
            return " / ".join(out)

        def exponent(name: str, attr: str) -> str:
            r0, r1 = by_key.get((name, a)), by_key.get((name, b))
            if not (r0 and r1):
                return "—"
            g = _growth(getattr(r0, attr), getattr(r1, attr))
            return _fmt(math.log(g) / math.log(n_factor) if g > 0 else math.nan, ".2f")

        for name in modules:
            lines.append(
                f"| {name} | {ratios(name, 'gflops_total')} | {ratios(name, 'ms')} | "
                f"{ratios(name, 'peak_mb')} | {exponent(name, 'gflops_total')} | "
                f"{exponent(name, 'ms')} | {exponent(name, 'peak_mb')} |"
            )

    lines += [
        "",
        f"Targets at {TARGET_SIZE}×{TARGET_SIZE}: ≤ {TARGET_RATIO:g} × {REFERENCE}'s "
        "time and peak memory.",
    ]
    for name in TARGET_MODULES:
        r = by_key.get((name, TARGET_SIZE))
        if r is None or math.isnan(r.time_ratio):
            lines.append(f"- {name}: not measured (needs {name} and {REFERENCE} at this size)")
            continue
        verdict = {
            what: ("met" if ratio <= TARGET_RATIO else "MISSED")
            for what, ratio in (("time", r.time_ratio), ("memory", r.mem_ratio))
        }
        lines.append(
            f"- {name}: time {r.time_ratio:.3f} {verdict['time']}; "
            f"memory {_fmt(r.mem_ratio, '.3f')} {verdict['memory']}"
        )

    uncounted: dict[str, list[str]] = {}
    for r in rows:
        for op in r.uncounted_ops:
            uncounted.setdefault(op, [])
            if r.module not in uncounted[op]:
                uncounted[op].append(r.module)
    lines += [
        "",
        "FLOPs: counted by torch.utils.flop_counter.FlopCounterMode (1 multiply-add = 2 FLOPs;"
        " matmuls, convolutions and attention kernels only; grouped-convolution backward"
        " recounted, see _conv_backward_flop). Ops that ran and were not "
        "counted: "
        + (
            "; ".join(f"{op} ({', '.join(sorted(m))})" for op, m in sorted(uncounted.items()))
            or "none"
        )
        + ".",
        "Peak MB: peak extra tensor memory during one forward + backward (input, module and "
        "parameters already allocated; includes saved activations, temporaries and the "
        "gradients), from the allocations PyTorch's allocator reports (torch.profiler "
        "profile_memory on CPU, max_memory_allocated on CUDA).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 96], help="H = W")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--modules", nargs="+", default=None, help="subset (default: all)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument(
        "--max-seconds", type=float, default=20.0, help="stop timing a config after this long"
    )
    parser.add_argument(
        "--mem-limit-gb", type=float, default=6.0, help="skip configs estimated above this"
    )
    parser.add_argument(
        "--timm",
        action=argparse.BooleanOptionalAction,
        default=importlib.util.find_spec("timm") is not None,
        help="also time the blocks timm has against timm's (default: on if timm installed)",
    )
    parser.add_argument("--timm-sizes", type=int, nargs="+", default=[32, 64], help="H = W")
    parser.add_argument(
        "--timm-repeats", type=int, default=15, help="least timed calls per side (after warm-up)"
    )
    parser.add_argument(
        "--timm-min-seconds",
        type=float,
        default=2.0,
        help="more calls until each side has run this long (0: exactly --timm-repeats)",
    )
    parser.add_argument(
        "--timm-only", action="store_true", help="only the timm comparison, not the main table"
    )
    args = parser.parse_args()
    device = setup_device(args.device, args.threads)
    modules = args.modules
    if modules is not None and REFERENCE not in modules:
        modules = [REFERENCE, *modules]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"cpus={os.cpu_count()} load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f} "
        f"B={args.batch} C={args.channels} sizes={args.sizes} "
        "(default constructor arguments, training mode)"
    )
    t0 = time.perf_counter()
    if not args.timm_only:
        rows = run(
            tuple(args.sizes),
            args.batch,
            args.channels,
            tuple(modules) if modules else None,
            device,
            args.warmup,
            args.repeats,
            args.max_seconds,
            args.mem_limit_gb,
        )
        print("\n".join(format_report(rows)))
    if args.timm or args.timm_only:
        timm_rows = run_timm(
            tuple(args.timm_sizes),
            args.batch,
            args.channels,
            tuple(args.modules) if args.modules else None,
            device,
            warmup=3,
            repeats=args.timm_repeats,
            min_seconds=args.timm_min_seconds,
        )
        print("\nAgainst timm " + _timm_version() + ":\n")
        print("\n".join(format_timm_report(timm_rows)))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    print(
        f"\nwall {time.perf_counter() - t0:.0f} s; load at end "
        f"{load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
    )


def _timm_version() -> str:
    import timm

    return timm.__version__


if __name__ == "__main__":
    main()
