"""Data-parallel scaling: training throughput of 1 process vs N ``torchrun`` processes.

Usage::

    python benchmarks/bench_ddp.py [--nproc 2] [--batches 200] [--batch 128] [--repeats 2]
                                   [--trainers ram soft] [--device cpu] [--threads 1]
                                   [--data-root ../shared/data]

For each trainer (``scripts/train_ram.py``: RAM, default model, 28x28 MNIST;
``scripts/train_soft.py``: the plain SmallCNN on MNIST) it runs the real script twice on
the same global batch ``--batch``:

- **1 process**: ``python scripts/train_X.py --batch-size B``;
- **N processes**: ``python -m torch.distributed.run --standalone --nproc_per_node N
  scripts/train_X.py --batch-size B/N`` (gloo on CPU, NCCL on CUDA),

each for ``--batches`` optimiser steps (``--max-batches-per-epoch``, one epoch),
``--threads`` torch threads per process. Throughput is the trainers' own
``charts/images_per_s`` (global images per second, read back from TensorBoard), the median
of the values logged every 10 steps after the first; process start-up, data loading and
evaluation are not in it. With ``--repeats R`` the runs alternate ``R`` times and the best
of each is kept (the machine may be shared; the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOG_EVERY = 10


def images_per_s(run_dir: Path) -> float:
    """Median of the run's logged ``charts/images_per_s`` after the first (warm-up) value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    values = [e.value for e in acc.Scalars("charts/images_per_s")]
    if len(values) < 2:
        raise SystemExit(f"too few logged steps in {run_dir}; raise --batches")
    return statistics.median(values[1:])


def command(trainer: str, nproc: int, args: argparse.Namespace, root: Path, name: str) -> list:
    script = str(REPO / "scripts" / f"train_{trainer}.py")
    launch = [sys.executable]
    if nproc > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    flags = ["--batch-size", str(args.batch // nproc), "--epochs", "1"]
    flags += ["--max-batches-per-epoch", str(args.batches), "--log-every", str(LOG_EVERY)]
    flags += ["--threads", str(args.threads), "--device", args.device, "--val-size", "1000"]
    flags += ["--runs-root", str(root), "--run-name", name]
    if args.data_root:
        flags += ["--data-root", args.data_root]
    flags += ["--playback", "0"] if trainer == "ram" else ["--module", "none"]
    return [*launch, script, *flags]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="processes of the parallel run")
    p.add_argument("--batches", type=int, default=200, help="optimiser steps per run")
    p.add_argument("--batch", type=int, default=128, help="global batch (split over ranks)")
    p.add_argument("--repeats", type=int, default=2, help="alternate runs; keep the best")
    p.add_argument("--trainers", nargs="+", default=["ram", "soft"], choices=["ram", "soft"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/raw")
    args = p.parse_args(argv)
    if args.batch % args.nproc:
        raise SystemExit(f"--batch {args.batch} is not divisible by --nproc {args.nproc}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print(f"load average before: {os.getloadavg()}", flush=True)
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for trainer in args.trainers:
                for nproc in (1, args.nproc):
                    name = f"{trainer}-{nproc}-{rep}"
                    cmd = command(trainer, nproc, args, Path(tmp), name)
                    t0 = time.perf_counter()
                    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if out.returncode:
                        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
                    ips = images_per_s(Path(tmp) / name)
                    wall = time.perf_counter() - t0
                    print(f"  {name}: {ips:8.0f} images/s (run {wall:.0f} s wall)", flush=True)
                    best[trainer, nproc] = max(best.get((trainer, nproc), 0.0), ips)
    print(f"load average after: {os.getloadavg()}")
    n = args.nproc
    print(
        f"\nglobal batch {args.batch}, {args.batches} steps, {args.threads} thread(s)/process, "
        f"{args.device}, best of {args.repeats}"
    )
    print(f"| trainer | 1 process (images/s) | {n} processes (images/s) | ratio {n}/1 |")
    print("|---|---:|---:|---:|")
    for trainer in args.trainers:
        one, many = best[trainer, 1], best[trainer, n]
        print(f"| train_{trainer}.py | {one:.0f} | {many:.0f} | {many / one:.2f} |")


if __name__ == "__main__":
    main()
