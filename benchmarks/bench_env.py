"""Environment throughput: GlimpseVectorEnv vs gymnasium's SyncVectorEnv of GlimpseEnv.

Usage::

    python benchmarks/bench_env.py [--device auto|cpu|cuda] [--quick] [--sizes 1 64 256 1024]

For each task (MNIST 28x28 and Cluttered MNIST 60x60, their registered glimpse settings)
and each number of episodes ``N``, it times, in the same run and on the same images:

- ``GlimpseVectorEnv``: the batched core, ``N`` episodes per call, on ``--device``
  (``auto``: the CPU, then CUDA when present);
- ``SyncVectorEnv``: ``gymnasium.vector.SyncVectorEnv`` over ``N`` :class:`envs.GlimpseEnv`
  (one Python ``step`` per episode; always on the CPU, its best case);
- the single env: one :class:`envs.GlimpseEnv` stepped directly (reset on termination).

Steps/s counts env steps (``N`` per vector call), autoreset steps included; actions are
random and valid (absolute locations uniform in ``[-1, 1]^2``, uniform labels), drawn
before timing. Each figure is the best of three timed windows of at least ``--seconds``
each, after a warm-up. Targets: vector >= 50x SyncVectorEnv at N=256 on the CPU;
single env >= 8,000 steps/s (issue 20).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from envs import TASKS, GlimpseEnv, GlimpseVectorEnv, ImageSource, MDPConfig

BENCH_TASKS = {
    # label -> (registered id, dataset keyword arguments: a test-split subset is enough)
    "MNIST 28x28": ("Glimpse/MNIST-v0", {}),
    "Cluttered 60x60": ("Glimpse/ClutteredMNIST60-v0", {"limit": 2048}),
}
TARGET_RATIO, TARGET_RATIO_N, TARGET_SINGLE = 50.0, 256, 8000.0
POOL = 16
"""Distinct pre-drawn action batches, cycled."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(
    step: Callable[[int], None], per_call: int, seconds: float, device: torch.device
) -> float:
    """Best steps/s over three windows of at least ``seconds``, after three warm-up calls.

    ``step(i)`` makes call ``i``; each window runs calls in doubling chunks (at most 64)
    and synchronises the device between chunks.
    """
    for i in range(3):
        step(i)
    _sync(device)
    best, calls = 0.0, 3
    for _ in range(3):
        n, chunk, t0 = 0, 1, time.perf_counter()
        while True:
            for _ in range(chunk):
                step(calls)
                calls += 1
            n += chunk
            _sync(device)
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
            chunk = min(chunk * 2, 64)
        best = max(best, n * per_call / dt)
    return best


def _task(env_id: str, dataset_kwargs: dict, data_root: str | None):
    kwargs = dict(TASKS[env_id])
    name = kwargs.pop("source")
    kwargs.pop("num_targets", None)
    config = MDPConfig(**kwargs)
    source = ImageSource.from_any(
        name, split="test", data_root=data_root, dataset_kwargs=dataset_kwargs
    )
    return source, config, kwargs


def bench_vector(source, config, n: int, device: torch.device, seconds: float) -> float:
    venv = GlimpseVectorEnv(source, n, config, device=device)
    venv.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    pool = [
        {
            "location": (torch.rand(n, 2, generator=gen) * 2 - 1).to(device),
            "label": torch.randint(0, config.num_classes, (n,), generator=gen).to(device),
        }
        for _ in range(POOL)
    ]
    return _rate(lambda i: venv.step(pool[i % POOL]), n, seconds, device)


def bench_sync(source, kwargs: dict, n: int, seconds: float) -> float:
    venv = gym.vector.SyncVectorEnv([lambda: GlimpseEnv(source, **kwargs) for _ in range(n)])
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    pool = [
        {
            "location": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            "label": rng.integers(0, 10, n),
        }
        for _ in range(POOL)
    ]
    rate = _rate(lambda i: venv.step(pool[i % POOL]), n, seconds, torch.device("cpu"))
    venv.close()
    return rate


def bench_single(source, kwargs: dict, seconds: float) -> float:
    env = GlimpseEnv(source, **kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    pool = [
        {"location": rng.uniform(-1, 1, 2).astype(np.float32), "label": np.int64(rng.integers(10))}
        for _ in range(POOL)
    ]

    def step(i: int) -> None:
        if env.step(pool[i % POOL])[2]:
            env.reset()

    return _rate(step, 1, seconds, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="auto", help="auto (cpu, then cuda if present), cpu, cuda"
    )
    parser.add_argument("--quick", action="store_true", help="short timing windows (smoke run)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 256, 1024])
    parser.add_argument("--seconds", type=float, default=None, help="timing window (s)")
    parser.add_argument("--data-root", default=None, help="MNIST root (default $GLIMPSE_DATA)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    seconds = args.seconds if args.seconds is not None else (0.1 if args.quick else 0.5)

    print(
        f"torch={torch.__version__} gymnasium={gym.__version__} threads={torch.get_num_threads()}"
        f" devices={','.join(devices)} window={seconds}s load={os.getloadavg()[0]:.1f}"
        f"/{os.cpu_count()} cores"
    )
    if torch.cuda.is_available():
        print(f"cuda device: {torch.cuda.get_device_name()}")
    print()
    print(
        "| task | device | N | GlimpseVectorEnv steps/s | SyncVectorEnv steps/s (CPU) | speed-up |"
    )
    print("|---|---|---:|---:|---:|---:|")
    singles, verdicts = {}, []
    for label, (env_id, dataset_kwargs) in BENCH_TASKS.items():
        source, config, kwargs = _task(env_id, dataset_kwargs, args.data_root)
        sync = {n: bench_sync(source, kwargs, n, seconds) for n in args.sizes}
        singles[label] = bench_single(source, kwargs, seconds)
        for device in map(torch.device, devices):
            dev_source = source.to(device)
            for n in args.sizes:
                vec = bench_vector(dev_source, config, n, device, seconds)
                ratio = vec / sync[n]
                print(
                    f"| {label} | {device.type} | {n} | {vec:,.0f} | {sync[n]:,.0f} | "
                    f"{ratio:,.1f}x |",
                    flush=True,
                )
                if device.type == "cpu" and n == TARGET_RATIO_N:
                    ok = ratio >= TARGET_RATIO
                    verdicts.append(
                        f"{label}: vector/sync at N={n} on CPU = {ratio:.1f}x "
                        f"(target >= {TARGET_RATIO:.0f}x: {'met' if ok else 'MISSED'})"
                    )
    print()
    print("| task | single GlimpseEnv steps/s (CPU) |")
    print("|---|---:|")
    for label, rate in singles.items():
        print(f"| {label} | {rate:,.0f} |")
        ok = rate >= TARGET_SINGLE
        verdicts.append(
            f"{label}: single env {rate:,.0f} steps/s "
            f"(target >= {TARGET_SINGLE:,.0f}: {'met' if ok else 'MISSED'})"
        )
    print()
    for v in verdicts:
        print(f"- {v}")


if __name__ == "__main__":
    main()
