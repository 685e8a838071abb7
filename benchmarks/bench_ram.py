"""RAM training throughput: the framework's train loop vs a minimal batched RAM in plain torch.

Usage::

    python benchmarks/bench_ram.py [--threads 1 2] [--epochs-fraction 1.0] [--repeats 1]
                                   [--profile] [--data-root ../shared/data]

Both sides train RAM (Mnih et al. 2014) on 28x28 MNIST, all 60,000 official training
images (``val_size=0``), 6 glimpses of 8x8 at one scale, batch 128, on the CPU, in the same
process and run:

- **framework**: the trainer's per-batch work, exactly as
  :meth:`agents.train.ReinforceMethod.update` and :func:`glimpse.loop.fit` do it -- the
  random first fixations of :func:`agents.train.train_first_fixations`,
  :func:`agents.reinforce.collect_rollout` through :class:`envs.GlimpseVectorEnv` (image
  stream, retina, reward, action validation), :func:`agents.reinforce.reinforce_loss` (with
  its logged metrics), :func:`glimpse.loop.apply_gradients` (backward, gradient clipping,
  Adam step), lr schedule. Evaluation, logging and checkpoints (once per epoch in the
  trainer) are excluded.
- **reference**: the least plain-torch code for the same math, written below: index a
  uint8 tensor with a shuffled permutation, crop the 8x8 glimpses with one
  ``grid_sample`` per step (bilinear at the pixel centres: the retina's value at one scale),
  the same glimpse/core/location/classifier/baseline layers, a clipped-Gaussian location
  policy, the hybrid REINFORCE loss, backward, clipping, Adam. No env, no validation.

Seconds per epoch are measured over ``--epochs-fraction`` of an epoch (468 batches of 128
make a full one) after 5 warm-up batches, and extrapolated to a full epoch when the
fraction is below 1 (the table says so). With ``--repeats N`` the two sides alternate
``N`` times and the best time of each is kept (this machine is shared). Achieved GFLOP/s
are each side's FLOPs per batch (:func:`glimpse.loop.count_update_flops`, forward and
backward: matrix products only) over its measured time, against the best fp32
``torch.mm`` GFLOP/s of :data:`PEAK_SHAPES` timed in the same process and thread count.
``--profile`` prints ``torch.profiler``'s op table of both sides and the top costs of the
framework loop (cProfile, cumulative and own time).

Targets: one epoch <= 10 s on a 2-core CPU; framework <= 1.05x the reference (issue 20;
it was 1.7x before).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agents.config import HardTrainConfig
from agents.policies import POLICIES
from agents.reinforce import ReinforceConfig, collect_rollout, reinforce_loss
from agents.train import train_first_fixations
from envs import GlimpseVectorEnv, ImageSource
from glimpse.loop import apply_gradients, count_update_flops
from glimpse.training import lr_scheduler

BATCH, GLIMPSES, G, HIDDEN, STD, LR, CLIP = 128, 6, 8, 256, 0.15, 1e-3, 10.0
WARMUP = 5
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
TARGET_EPOCH_S, TARGET_RATIO = 10.0, 1.05


# ------------------------------------------------------------------------- framework
def framework_step(data_root: str | None) -> Callable[[], None]:
    """One training batch of the real trainer (its per-batch work, nothing else)."""
    cfg = HardTrainConfig(batch_size=BATCH, std=STD, lr=LR, hidden=HIDDEN, grad_clip=CLIP)
    cfg = cfg.resolved()
    source = ImageSource.from_any("mnist", "train", data_root, "cpu", {"val_size": 0})
    venv = GlimpseVectorEnv(source, BATCH, cfg.mdp(), device="cpu")
    venv.reset(seed=0)
    shape = venv.single_observation_space["glimpse"].shape
    policy = POLICIES["ram"](cfg, shape, 1)
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    sched = lr_scheduler(opt, "cosine", 10 * len(source) // BATCH)
    rcfg = ReinforceConfig(baseline_coef=cfg.baseline_coef, entropy_coef=cfg.entropy_coef)

    episodes = 0

    def step() -> None:
        nonlocal episodes
        options = train_first_fixations(cfg, episodes)
        ro = collect_rollout(policy, venv, options=options)
        loss, _ = reinforce_loss(ro, rcfg)
        apply_gradients(loss, policy, opt, cfg.grad_clip)
        sched.step()
        episodes += BATCH

    return step


# ------------------------------------------------------------------------- reference
class MinimalRAM(nn.Module):
    """RAM's networks, nothing else (glimpse 8x8, one scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.what, self.where = nn.Linear(G * G, 128), nn.Linear(2, 128)
        self.what_out, self.where_out = nn.Linear(128, 256), nn.Linear(128, 256)
        self.core = nn.RNNCell(256, HIDDEN, nonlinearity="relu")
        self.locator, self.classifier = nn.Linear(HIDDEN, 2), nn.Linear(HIDDEN, 10)
        self.baseline = nn.Linear(HIDDEN, 1)


def reference_step(data_root: str | None) -> Callable[[], None]:
    """One training batch of a minimal batched RAM in plain torch."""
    from glimpse.data import get_dataset

    data = get_dataset("mnist", split="train", root=data_root, val_size=0)
    images = torch.as_tensor(data.data).reshape(-1, 1, 28, 28)  # uint8
    labels = torch.as_tensor(data.targets).long()
    n = images.shape[0]
    model = MinimalRAM()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    # Glimpse pixel centres relative to the location, in grid_sample's [-1, 1] units.
    offsets = (torch.arange(G) - (G - 1) / 2) * (2 / 28)
    patch = torch.stack(torch.meshgrid(offsets, offsets, indexing="xy"), -1)  # (G, G, 2)
    log_std = torch.log(torch.tensor(STD))
    state = {"perm": torch.randperm(n), "pos": 0}

    def step() -> None:
        if state["pos"] + BATCH > n:
            state["perm"], state["pos"] = torch.randperm(n), 0
        idx = state["perm"][state["pos"] : state["pos"] + BATCH]
        state["pos"] += BATCH
        x, y = images[idx].float() / 255, labels[idx]
        loc = torch.zeros(BATCH, 2)
        h = torch.zeros(BATCH, HIDDEN)
        logps, values = [], []
        for _ in range(GLIMPSES):
            glimpse = F.grid_sample(x, loc[:, None, None] + patch, align_corners=False)
            m = model
            g = F.relu(
                m.what_out(F.relu(m.what(glimpse.flatten(1)))) + m.where_out(F.relu(m.where(loc)))
            )
            h = m.core(g, h)
            # .float(): a no-op in fp32; under bf16 autocast the policy's math stays fp32
            mean = torch.tanh(m.locator(h.detach())).float()
            loc = (mean + STD * torch.randn_like(mean)).clamp(-1, 1).detach()
            z = (loc - mean) / STD
            inside = -0.5 * z * z - log_std - LOG_SQRT_2PI
            upper = torch.special.log_ndtr((mean - 1) / STD)
            lower = torch.special.log_ndtr((-1 - mean) / STD)
            logp = torch.where(loc >= 1, upper, torch.where(loc <= -1, lower, inside)).sum(1)
            logps.append(logp)
            values.append(m.baseline(h.detach()).squeeze(1).float())
        logits = model.classifier(h)
        reward = (logits.argmax(1) == y).float()
        logp, b = torch.stack(logps[:-1]), torch.stack(values[:-1])
        loss = (
            F.cross_entropy(logits, y)
            - ((reward - b).detach() * logp).sum(0).mean()
            + F.mse_loss(b, reward.expand_as(b))
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()

    return step


# ---------------------------------------------------------------------------- timing
def seconds_per_epoch(step: Callable[[], None], batches: int, full: int) -> float:
    for _ in range(WARMUP):
        step()
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    return (time.perf_counter() - t0) * full / batches


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one training batch, forward and backward (the project's counter,
    :func:`glimpse.loop.count_update_flops`: matrix products only)."""
    with count_update_flops() as flops:
        step()
    return flops()


PEAK_SHAPES = ((128, 64, 128), (128, 256, 256), (1024, 1024, 1024))
"""``(m, k, n)`` of the fp32 ``torch.mm`` timed for the peak: RAM's "what" layer and core
at batch 128, and a large square product (the machine's matmul roof)."""


def matmul_gflops(m: int, k: int, n: int, seconds: float = 0.5) -> float:
    """Best achieved GFLOP/s of an fp32 ``(m, k) @ (k, n)`` ``torch.mm`` over ``seconds``."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    reps = max(1, int(2e8 // (2 * m * k * n)))  # ~0.2 GFLOP per timing
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * m * k * n / best / 1e9


def op_table(step: Callable[[], None], batches: int, top: int = 15) -> str:
    """``torch.profiler``'s op table (self CPU time) over ``batches`` batches."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(WARMUP):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(batches):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def profile(step: Callable[[], None], batches: int, top: int = 20) -> str:
    for _ in range(WARMUP):
        step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(batches):
        step()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs-fraction", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--data-root", default=os.environ.get("GLIMPSE_DATA"))
    args = parser.parse_args()
    if not 0 < args.epochs_fraction <= 1:
        parser.error("--epochs-fraction must be in (0, 1]")

    torch.manual_seed(0)
    fw, ref = framework_step(args.data_root), reference_step(args.data_root)
    flops_fw, flops_ref = step_flops(fw), step_flops(ref)
    full = 60000 // BATCH
    batches = max(1, round(args.epochs_fraction * full))
    how = "measured" if batches == full else f"extrapolated from {batches} batches"
    print(f"RAM, MNIST 28x28, {GLIMPSES} glimpses of {G}x{G}, batch {BATCH}, CPU")
    print(
        f"one epoch = {full} batches ({full * BATCH} images); times {how}; best of "
        f"{args.repeats}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{'threads':>7} | {'framework s/epoch':>17} | {'reference s/epoch':>17} | "
        f"{'ratio':>5} | {'framework img/s':>15}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        t_fw = t_ref = float("inf")
        for _ in range(args.repeats):
            t_fw = min(t_fw, seconds_per_epoch(fw, batches, full))
            t_ref = min(t_ref, seconds_per_epoch(ref, batches, full))
        print(
            f"{threads:>7} | {t_fw:>17.2f} | {t_ref:>17.2f} | {t_fw / t_ref:>5.2f} | "
            f"{full * BATCH / t_fw:>15.0f}",
            flush=True,
        )
        peaks = [matmul_gflops(*shape) for shape in PEAK_SHAPES]
        peak = max(peaks)
        mm = ", ".join(
            f"{m}x{k}x{n}: {g:.1f}" for (m, k, n), g in zip(PEAK_SHAPES, peaks, strict=True)
        )
        print(f"        fp32 torch.mm GFLOP/s ({threads} thread(s); m x k x n): {mm}")
        for name, fl, t in (("framework", flops_fw, t_fw), ("reference", flops_ref, t_ref)):
            achieved = fl * full / t / 1e9
            print(
                f"        {name}: {fl / 1e6:.1f} MFLOP/batch, {achieved:.2f} GFLOP/s = "
                f"{100 * achieved / peak:.0f}% of the measured peak {peak:.1f}"
            )
    print(f"targets: epoch <= {TARGET_EPOCH_S:.0f} s, ratio <= {TARGET_RATIO}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.profile:
        torch.set_num_threads(args.threads[0])
        few = max(1, batches // 4)
        for name, step in (("framework", fw), ("reference", ref)):
            print(f"torch.profiler, {name}, {few} batches:")
            print(op_table(step, few))
        print(profile(fw, few))


if __name__ == "__main__":
    main()
