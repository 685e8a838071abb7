"""Retina throughput: batched area-averaging retina vs a per-sample loop and a memory floor.

Usage::

    python benchmarks/bench_retina.py [--device cpu|cuda] [--repeats 20] [--threads 1]

For each configuration it times, in the same run:

- ``loop``: the per-sample, per-scale reference (``tests/reference/retina.py``: crop with
  zero padding, then ``avg_pool2d``), on pixel-aligned locations so every path computes
  the same glimpses (checked);
- ``one-shot``: :func:`glimpse.retina.foveate` on the whole batch;
- ``prepared``: one glimpse from :meth:`Retina.prepare`'s table (what the env does every
  step); ``prepare`` (a fresh table, allocation included) and ``replace`` (all slots
  rebuilt in place: what the env pays for every new batch of episodes), also in glimpses;
- ``episode``: ``(prepare + T glimpses) / T`` per glimpse, ``T`` the task's glimpses;
- ``floor``: a gather (``torch.take``) of exactly the table entries the prepared glimpse
  reads (the 4 bilinear taps of every output value), printed as ``floor/prepared``: the
  fraction of that memory floor the glimpse reaches;
- ``write floor``: ``table.fill_`` of the prepared table (existing memory: the least any
  prepare must do is write every entry once), in ms and in glimpses, and
  ``floor/replace``, the fraction of that floor the in-place rebuild reaches. Where the
  write floor alone costs more than a glimpse, "prepare <= one glimpse" is out of reach
  for a table of ``k`` box-filtered copies of the images.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import setup_device
from glimpse.retina import BoxPyramid, Retina, patch_boxes, pixel_to_loc
from tests.reference.retina import naive_foveate

CONFIGS = [
    # (B, H, W, g, k, s, T): T = glimpses per episode on that task (RAM paper)
    (128, 28, 28, 8, 1, 2.0, 6),
    (128, 60, 60, 12, 3, 2.0, 8),
    (256, 100, 100, 12, 4, 2.0, 8),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    """Median seconds per call over ``repeats`` calls, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _tap_indices(prepared: BoxPyramid, loc: torch.Tensor, retina: Retina) -> torch.Tensor:
    """Flat table indices of the 4 bilinear taps of every output value of a glimpse."""
    b, ch, h, w = prepared.shape
    k, g = retina.num_scales, retina.glimpse_size
    _, _, _, hp, wp = prepared.table.shape
    p = prepared.cells[-1] - 1
    lo = patch_boxes(loc.double(), h, w, g, k, retina.scale_factor)[..., :2] + p  # (B, k, 2)
    cells = torch.tensor(prepared.cells[:k], dtype=torch.float64, device=loc.device)
    u = torch.arange(g, dtype=torch.float64, device=loc.device)
    corner = (lo[..., None] + cells[:, None, None] * u).floor().long()  # (B, k, 2, g)
    x = (corner[:, :, 0, None, :, None] + torch.tensor([0, 1], device=loc.device)).clamp(0, wp - 1)
    y = (corner[:, :, 1, :, None, None] + torch.tensor([0, 1], device=loc.device)).clamp(0, hp - 1)
    pos = y[..., :, None] * wp + x[..., None, :]  # (B, k, g, g, 2, 2)
    plane = torch.arange(b * k, device=loc.device).view(b, k, 1, 1, 1, 1) * ch
    idx = plane[:, :, None] + torch.arange(ch, device=loc.device).view(1, 1, -1, 1, 1, 1, 1)
    return (idx * (hp * wp) + pos[:, :, None]).flatten()


def run(device: torch.device, repeats: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for b, h, w, g, k, s, steps in CONFIGS:
        images = torch.rand(b, 1, h, w, generator=gen).to(device)
        # Pixel-aligned centres (even pixel coordinates) so the loop reference is exact.
        px = torch.stack(
            [
                torch.randint(0, w // 2 + 1, (b,), generator=gen) * 2,
                torch.randint(0, h // 2 + 1, (b,), generator=gen) * 2,
            ],
            dim=1,
        ).double()
        loc = pixel_to_loc(px, h, w).float().to(device)
        retina = Retina(g, k, s)
        prepared = retina.prepare(images)
        out = retina(images, loc)
        ref = naive_foveate(images, loc, g, k, s)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # float32 pixel coordinates inside grid_sample: ~1e-5 at 100 px (glimpse.retina docs)
        torch.testing.assert_close(retina(prepared, loc), ref, rtol=0, atol=3e-5)
        t_loop = _time(lambda: naive_foveate(images, loc, g, k, s), device, max(3, repeats // 5))
        t_one = _time(lambda: retina(images, loc), device, repeats)
        t_prep = _time(lambda: retina.prepare(images), device, repeats)
        slots = torch.arange(b, device=device)
        t_replace = _time(lambda: prepared.replace(slots, images), device, repeats)
        t_glimpse = _time(lambda: retina(prepared, loc), device, repeats)
        torch.testing.assert_close(retina(prepared, loc), ref, rtol=0, atol=3e-5)  # replaced
        taps = _tap_indices(prepared, loc, retina)
        t_floor = _time(lambda: prepared.table.take(taps), device, repeats)
        scratch = prepared.table.clone()
        t_write = _time(lambda: scratch.fill_(0.5), device, repeats)
        t_episode = (t_prep + steps * t_glimpse) / steps  # per glimpse, prepare amortised
        rows.append(
            {
                "config": f"B={b} {h}x{w} g={g} k={k} s={s:g}",
                "loop": b / t_loop,
                "one_shot": b / t_one,
                "one_shot_x": t_loop / t_one,
                "prepared": b / t_glimpse,
                "prepared_x": t_loop / t_glimpse,
                "prepare_ms": t_prep * 1e3,
                "prepare_glimpses": t_prep / t_glimpse,
                "replace_ms": t_replace * 1e3,
                "replace_glimpses": t_replace / t_glimpse,
                "steps": steps,
                "episode_x": t_loop / t_episode,
                "floor_ratio": t_floor / t_glimpse,
                "write_ms": t_write * 1e3,
                "write_glimpses": t_write / t_glimpse,
                "write_ratio": t_write / t_replace,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    device = setup_device(args.device, args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"cpus={os.cpu_count()} load={load:.1f}"
    )
    print(
        "| config | loop img/s | one-shot img/s (x loop) | prepared img/s (x loop) |"
        " prepare ms (glimpses) | replace ms (glimpses) | episode x loop (T) |"
        " floor/prepared | write floor ms (glimpses) | floor/replace |"
    )
    print("|" + "---|" * 10)
    for r in run(device, args.repeats):
        print(
            f"| {r['config']} | {r['loop']:,.0f} | {r['one_shot']:,.0f} ({r['one_shot_x']:.1f}x) | "
            f"{r['prepared']:,.0f} ({r['prepared_x']:.1f}x) | "
            f"{r['prepare_ms']:.2f} ({r['prepare_glimpses']:.1f}) | "
            f"{r['replace_ms']:.2f} ({r['replace_glimpses']:.1f}) | "
            f"{r['episode_x']:.1f}x ({r['steps']}) | {r['floor_ratio']:.1%} | "
            f"{r['write_ms']:.2f} ({r['write_glimpses']:.1f}) | {r['write_ratio']:.1%} |"
        )


if __name__ == "__main__":
    main()
