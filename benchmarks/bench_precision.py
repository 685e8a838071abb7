"""Mixed precision on the CPU (issue 20): fp32 against bf16 autocast, for RAM and a soft CNN.

Usage::

    python benchmarks/bench_precision.py [--threads 1] [--seconds 20] [--repeats 3]
                                         [--parts peak ram soft] [--data-root ../shared/data]

What ``--precision bf16`` does in the trainers (:mod:`glimpse.precision`): the forward
passes of every update run under ``torch.autocast(dtype=torch.bfloat16)``, master weights
and Adam state stay fp32, backward and step run outside autocast, the REINFORCE location
log-probabilities and baselines stay fp32, and the soft CNNs are ``channels_last``. This
script times exactly those update paths, the two precisions alternating ``--repeats``
times in one process (best of each kept; the machine is shared):

- **peak**: the best ``torch.mm`` GFLOP/s in fp32 and in bf16 at RAM's shapes and 1024^3
  (what the matrix units give).
- **ram**: one training batch of RAM on 28x28 MNIST (6 glimpses of 8x8, batch 128) through
  the framework (:func:`bench_ram.framework_step`: env, retina, policy, REINFORCE loss,
  backward, clipping, Adam, schedule) in fp32 and under bf16 autocast, against the minimal
  plain-torch RAM of :func:`bench_ram.reference_step` in fp32 eager (the issue's
  reference), and that reference under bf16 autocast (what eager bf16 gives at these
  shapes without the framework). Target: framework bf16 <= **0.6x** the fp32 reference.
- **soft**: one training batch of the SmallCNN (widths 32-64-128, no block; :func:`soft_
  baselines.train.build_model`) on 60x60 single-channel images, batch 64, with the update of
  :meth:`soft_baselines.train.SoftMethod.update` (cross-entropy on fp32 logits,
  :func:`glimpse.loop.apply_gradients`, Adam): fp32 contiguous against bf16 autocast +
  ``channels_last``. The images are fixed random tensors (the cost of a convolution does not
  depend on the pixel values). Target: bf16 >= **2x** fp32's images/s.

On a CPU without native bf16 (:func:`glimpse.precision.bf16_supported` is False) the bf16
columns are emulated and slower; the script says so in its header and still runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ram

from glimpse.loop import apply_gradients
from glimpse.precision import autocast, bf16_supported
from soft_baselines.train import SoftTrainConfig, build_model

RAM_TARGET, SOFT_TARGET = 0.6, 2.0
SOFT_BATCH, SOFT_SIZE, SOFT_WIDTHS = 64, 60, (32, 64, 128)


def casting(step: Callable[[], None], precision: str) -> Callable[[], None]:
    """``step`` under the loop's autocast (:func:`glimpse.loop.fit` wraps each update so)."""

    def run() -> None:
        with autocast(precision, "cpu"):
            step()

    return run


def soft_step(precision: str, seed: int = 0) -> Callable[[], None]:
    """One SoftMethod-style training batch of the plain SmallCNN at ``precision``."""
    torch.manual_seed(seed)
    cfg = SoftTrainConfig(module="none", widths=SOFT_WIDTHS, precision=precision)
    model = build_model(cfg, (1, SOFT_SIZE, SOFT_SIZE), 10)
    fmt = torch.channels_last if precision == "bf16" else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(SOFT_BATCH, 1, SOFT_SIZE, SOFT_SIZE).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (SOFT_BATCH,))

    def step() -> None:
        with autocast(precision, "cpu"):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            apply_gradients(loss, model, opt, 0.0)

    return step


def seconds_per_step(step: Callable[[], None], seconds: float, warmup: int = 3) -> float:
    """Mean seconds per call of ``step`` over at least ``seconds`` (after ``warmup``)."""
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return dt / n


def mm_gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Best GFLOP/s of a ``(m, k) @ (k, n)`` ``torch.mm`` in ``dtype`` over ``seconds``."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    reps = max(1, int(2e8 // (2 * m * k * n)))
    best, end = float("inf"), time.perf_counter() + seconds
    torch.mm(a, b)
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * m * k * n / best / 1e9


def best_of(steps: dict[str, Callable[[], None]], seconds: float, repeats: int) -> dict[str, float]:
    """Each step's best seconds per call over ``repeats`` alternating rounds."""
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            best[name] = min(best[name], seconds_per_step(step, seconds))
    return best


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window per side")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; best kept")
    parser.add_argument(
        "--parts", nargs="+", default=["peak", "ram", "soft"], choices=["peak", "ram", "soft"]
    )
    parser.add_argument("--data-root", default=os.environ.get("GLIMPSE_DATA"))
    args = parser.parse_args()
    if args.threads < 1 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1 and --seconds > 0")
    torch.set_num_threads(args.threads)
    native = bf16_supported("cpu")
    print(
        f"torch={torch.__version__} threads={args.threads} "
        f"cpu_capability={torch.backends.cpu.get_cpu_capability()} native_bf16={native} "
        f"window={args.seconds}s repeats={args.repeats} load={load()}"
    )
    if not native:
        print("this CPU has no native bf16 matrix arithmetic: bf16 below is emulated")

    if "peak" in args.parts:
        print("\n| torch.mm m x k x n | fp32 GFLOP/s | bf16 GFLOP/s | bf16/fp32 |")
        print("|---|---:|---:|---:|")
        for m, k, n in bench_ram.PEAK_SHAPES:
            f32 = mm_gflops(m, k, n, torch.float32)
            b16 = mm_gflops(m, k, n, torch.bfloat16)
            print(f"| {m}x{k}x{n} | {f32:.1f} | {b16:.1f} | {b16 / f32:.2f}x |", flush=True)

    if "ram" in args.parts:
        torch.manual_seed(0)
        steps = {
            "reference fp32": bench_ram.reference_step(args.data_root),
            "reference bf16": casting(bench_ram.reference_step(args.data_root), "bf16"),
            "framework fp32": casting(bench_ram.framework_step(args.data_root), "fp32"),
            "framework bf16": casting(bench_ram.framework_step(args.data_root), "bf16"),
        }
        t = best_of(steps, args.seconds, args.repeats)
        ref = t["reference fp32"]
        print(f"\nRAM, MNIST 28x28, batch {bench_ram.BATCH} (load {load()})")
        print("| side | ms/batch | images/s | x fp32 reference |")
        print("|---|---:|---:|---:|")
        for name, s in t.items():
            print(f"| {name} | {1e3 * s:.2f} | {bench_ram.BATCH / s:,.0f} | {s / ref:.2f}x |")
        ratio = t["framework bf16"] / ref
        verdict = "met" if ratio <= RAM_TARGET else "MISSED"
        print(
            f"- framework bf16 / fp32 reference = {ratio:.2f}x (target <= {RAM_TARGET}: "
            f"{verdict}); framework bf16 / framework fp32 = "
            f"{t['framework bf16'] / t['framework fp32']:.2f}x",
            flush=True,
        )

    if "soft" in args.parts:
        steps = {"fp32": soft_step("fp32"), "bf16 + channels_last": soft_step("bf16")}
        t = best_of(steps, args.seconds, args.repeats)
        print(
            f"\nSmallCNN {'-'.join(map(str, SOFT_WIDTHS))}, {SOFT_SIZE}x{SOFT_SIZE}, batch "
            f"{SOFT_BATCH}, training step (load {load()})"
        )
        print("| precision | ms/batch | images/s | x fp32 |")
        print("|---|---:|---:|---:|")
        f32 = t["fp32"]
        for name, s in t.items():
            print(f"| {name} | {1e3 * s:.1f} | {SOFT_BATCH / s:,.0f} | {f32 / s:.2f}x |")
        speed = f32 / t["bf16 + channels_last"]
        verdict = "met" if speed >= SOFT_TARGET else "MISSED"
        print(
            f"- bf16 images/s / fp32 images/s = {speed:.2f}x (target >= {SOFT_TARGET}: {verdict})"
        )
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
