"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

The same script runs both ways: launched by ``torchrun`` (the environment holds ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``) every helper here talks to
the process group; launched plainly, every helper is a no-op for a world of one process
(``rank() == 0``, ``world_size() == 1``, reductions return their input).

A trainer adopts it in a few lines::

    with distributed.session(cfg.setup()) as device, loop.training_run(cfg) as (cfg, run):
        # NCCL on CUDA, gloo on CPU; rank 0's cfg on every rank; the Run writes on rank 0
        model = build(...).to(device)
        distributed.broadcast_parameters(model)             # identical initial weights
        distributed.seed_rank(cfg.seed)                      # own sampling noise per rank
        stream = IndexStream(n, seed=cfg.seed, rank=distributed.rank(),
                             world_size=distributed.world_size())
        ...
        loss.backward(); distributed.allreduce_gradients(model.parameters()); opt.step()
        metrics = distributed.mean_metrics(metrics)          # for logging
        val = evaluation.evaluate_sharded(predict, labels, batch_size)

Conventions (Goyal et al. 2017, "Accurate, Large Minibatch SGD"):

- **Batch.** ``batch_size`` is per rank; one optimiser step consumes ``batch_size x
  world_size`` images (the global batch). The learning rate is not rescaled for you.
- **Data.** Every rank builds the same dataset (generated sets come from a fixed seed)
  and reads a disjoint, seeded, equally long shard of each epoch
  (:class:`glimpse.data.source.IndexStream` with ``rank``/``world_size``).
- **Gradients** are averaged over ranks (DDP, :func:`wrap_ddp`, or the explicit
  :func:`allreduce_gradients`), so with equal per-rank batches the update is that of the
  mean of the per-rank losses. For a loss that is a mean over its batch this *is* the
  loss of the global batch: ``mean_r mean_{i in r} l_i = mean_i l_i``.
- **REINFORCE** (:mod:`agents.reinforce`). The hybrid loss is cross-entropy (mean over
  episodes and targets) + policy gradient ``mean_b sum_t -A_{t,b} log pi`` + baseline MSE
  (mean over steps and episodes) - entropy (mean): every part is a per-episode term
  averaged over the batch, and the advantage ``A = G - b`` uses the episode's own return
  and the baseline network's own prediction. Nothing is batch-global (no advantage
  normalisation, no batch-mean baseline), so computing ``A`` per rank from that rank's
  rollout and averaging gradients gives exactly the gradient of the loss over the global
  batch (``tests/test_glimpse_distributed.py`` checks it against one process on ``2B`` episodes).
  A trainer that adds a batch-global statistic (e.g. advantage normalisation in PPO)
  must reduce it across ranks itself (:func:`all_reduce`) to keep this property.
- Hard-attention policies are driven through ``initial_state``/``act`` rather than
  ``forward`` and run several forward passes per backward, which ``DistributedDataParallel``
  does not see; they use :func:`allreduce_gradients` (one flat all-reduce per step, grads
  that are ``None`` count as zero, so no ``find_unused_parameters`` is needed). Ordinary
  ``forward`` models (the soft baselines) use DDP (:func:`wrap_ddp`), which also keeps
  BatchNorm buffers in step (rank 0's are broadcast; :func:`broadcast_buffers` before
  evaluation). BatchNorm statistics are per rank unless converted to SyncBatchNorm (CUDA).
- **Randomness.** All ranks seed alike, so initial weights agree (and are broadcast from
  rank 0 anyway); then :func:`seed_rank` gives ranks ``r > 0`` their own sampling stream
  (rank 0 keeps the single-process stream). Checkpoints hold every rank's RNG and
  data-stream state (:func:`gather_rank_states`), restored per rank on resume
  (:func:`rank_state`; resume with the same number of processes).
- **Files** (TensorBoard, checkpoints, ``config.json``, ``metrics.json``) are written by
  rank 0 only (:class:`glimpse.training.Run` with ``enabled=is_main()``); checkpoints are
  read by rank 0 and broadcast (:func:`main_then_broadcast`), so nodes need no shared disk.
- **Evaluation** is sharded: each rank predicts a contiguous slice of the split and the
  predictions are gathered, so the metrics equal a single-process evaluation exactly.

Debugging hook: with the environment variable ``GLIMPSE_DDP_DEBUG=<folder>`` set, the
trainers call :func:`debug_record` after every optimiser step and each rank appends one
JSON line (step, a SHA-256 of its parameters, its batch indices, its loss terms) to
``<folder>/rank<r>.jsonl``; the tests use it to check that all ranks hold identical
weights after every step. Off (and free) when the variable is unset.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from glimpse.rng import seed_everything

T = TypeVar("T")

__all__ = [
    "DEBUG_ENV",
    "active",
    "all_gather_cat",
    "all_reduce",
    "allreduce_gradients",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "broadcast_parameters",
    "collective_call",
    "debug_record",
    "debugging",
    "gather_rank_states",
    "init",
    "is_main",
    "launched",
    "local_main_first",
    "local_rank",
    "main_then_broadcast",
    "mean_metrics",
    "parameter_digest",
    "rank",
    "rank_state",
    "reduce_counts",
    "seed_rank",
    "session",
    "shard_range",
    "shutdown",
    "unwrap",
    "world_size",
    "wrap_ddp",
]

DEBUG_ENV = "GLIMPSE_DDP_DEBUG"
"""Environment variable naming a folder for per-step, per-rank debug records."""

_owned = False  # whether init() created the process group (then shutdown() destroys it)


# ----------------------------------------------------------------------------- who am I
def launched() -> bool:
    """Whether this process was started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether a process group is up (collectives talk to other ranks)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK``; 0 when not launched by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0: the one process that logs and writes files."""
    return rank() == 0


# -------------------------------------------------------------------------- lifecycle
def init(device: torch.device | str = "cpu", timeout_s: float | None = None) -> torch.device:
    """Join the process group when launched by ``torchrun``; return the device to train on.

    The backend follows the device: NCCL for CUDA (each rank on ``cuda:LOCAL_RANK``),
    gloo for CPU. Without ``torchrun`` (or when a group already exists, e.g. set up by the
    caller) nothing is initialised and ``device`` comes back unchanged (CUDA ranks still
    get ``cuda:LOCAL_RANK``).
    """
    global _owned
    device = torch.device(device)
    if device.type == "cuda" and launched():
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not launched() or active():
        return device
    if not dist.is_available():
        raise RuntimeError("launched by torchrun but this PyTorch has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kw: dict[str, Any] = {"backend": backend}
    if timeout_s is not None:
        kw["timeout"] = datetime.timedelta(seconds=timeout_s)
    if device.type == "cuda":
        kw["device_id"] = device
    dist.init_process_group(**kw)
    _owned = True
    return device


def shutdown(wait: bool = True) -> None:
    """Leave the process group if :func:`init` created it (no-op otherwise).

    With ``wait`` every rank first meets at a barrier, so no rank tears down its gloo
    connections while another still has work in flight on them (a rank whose peer vanished
    mid-teardown can abort with "terminate called without an active exception"). Pass
    ``wait=False`` when leaving because of an error: the other ranks may never arrive.
    The scripts then also skip interpreter finalisation, where gloo can still abort a rank
    (:func:`glimpse.training.exit_after_torchrun`).
    """
    global _owned
    if _owned and active():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
    _owned = False


@contextmanager
def session(
    device: torch.device | str = "cpu", timeout_s: float | None = None
) -> Iterator[torch.device]:
    """``with session(device) as device:`` -- :func:`init` on entry; on exit the process
    group is destroyed if this session created it, after a barrier when the body finished
    normally (sessions nest: a trainer called inside a caller's session leaves the caller's
    group up)."""
    created = launched() and not active()
    dev = init(device, timeout_s)
    try:
        yield dev
    except BaseException:
        if created:
            shutdown(wait=False)
        raise
    if created:
        shutdown()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if active():
        dist.barrier()


# ------------------------------------------------------------------------ collectives
def _comm_device() -> torch.device:
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(value: Tensor | float, op: str = "sum") -> Tensor | float:
    """Sum (``op="sum"``) or mean (``"mean"``) of ``value`` over ranks; a float comes back
    as a float, a tensor as a new tensor on its own device. Identity in one process."""
    if op not in ("sum", "mean"):
        raise ValueError(f"op must be 'sum' or 'mean', got {op!r}")
    is_tensor = isinstance(value, Tensor)
    if not active():
        return value.clone() if is_tensor else value
    t = value.detach() if is_tensor else torch.tensor(float(value), dtype=torch.float64)
    buf = t.to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    if op == "mean":
        buf = buf / world_size()
    return buf.to(t.device) if is_tensor else float(buf.item())


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Each value averaged over ranks (one all-reduce). Right for per-rank means over
    equal batches; use :func:`reduce_counts` for exact ratios of counts."""
    if not active() or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    buf = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    out = all_reduce(buf, "mean")
    return dict(zip(keys, out.tolist(), strict=True))


def reduce_counts(*counts: Tensor | float) -> tuple[float, ...]:
    """Sums over ranks of each count (e.g. ``correct, total``), in float64: an accuracy
    ``correct / total`` from them is exact, not a mean of per-rank means."""
    buf = torch.tensor([float(c) for c in counts], dtype=torch.float64)
    return tuple(all_reduce(buf, "sum").tolist())


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (any picklable object)."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def collective_call(fn: Callable[[], T]) -> T:
    """Call ``fn`` on every rank; if it raises on any rank, raise on every rank (the
    failing rank re-raises its own error, the others a ``RuntimeError`` naming it), so
    no rank is left waiting in a collective. Use it around setup that can fail on one rank
    only, e.g. creating the run folder on rank 0."""
    try:
        result, error = fn(), None
    except Exception as err:  # re-raised below, on every rank
        result, error = None, err
    if not active():
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
    failures: list[Any] = [None] * world_size()
    dist.all_gather_object(failures, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, msg) for r, msg in enumerate(failures) if msg is not None]
    if failed:
        r, msg = failed[0]
        raise RuntimeError(f"rank {r} failed: {msg}")
    return result  # type: ignore[return-value]


def main_then_broadcast(fn: Callable[[], T]) -> T:
    """Call ``fn`` on rank 0 only (e.g. read a checkpoint) and hand its result to every
    rank; if it raises, every rank raises (rank 0 its own error, the others a
    ``RuntimeError`` with its message)."""
    if not active():
        return fn()
    payload: tuple[bool, Any] = (True, None)
    error: Exception | None = None
    if is_main():
        try:
            payload = (True, fn())
        except Exception as err:  # re-raised below, on every rank
            error = err
            payload = (False, f"{type(err).__name__}: {err}")
    ok, value = broadcast_object(payload)
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate ``t`` (shape ``(n_r, ...)``, ``n_r`` may differ by rank) over ranks in
    rank order; same device as ``t``."""
    if not active():
        return t
    dev = _comm_device()
    n = torch.tensor([t.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes_l = [int(s.item()) for s in sizes]
    most = max(sizes_l)
    pad = torch.zeros((most - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=dev)
    mine = torch.cat([t.to(dev), pad])
    parts = [torch.empty_like(mine) for _ in sizes_l]
    dist.all_gather(parts, mine)
    return torch.cat([p[:s] for p, s in zip(parts, sizes_l, strict=True)]).to(t.device)


# -------------------------------------------------------------------------- models
def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module``."""
    if not active():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            _broadcast_tensor(t, src)


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running statistics) to every rank; call
    it before evaluating a DDP model, whose buffers drift apart after the last step."""
    if not active():
        return
    with torch.no_grad():
        for t in module.buffers():
            _broadcast_tensor(t, src)


def _broadcast_tensor(t: Tensor, src: int) -> None:
    buf = t.detach().to(_comm_device(), copy=True)
    dist.broadcast(buf, src=src)
    t.copy_(buf.to(t.device))


def allreduce_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks in one flat all-reduce (the explicit
    equivalent of DDP's synchronisation; call between ``backward`` and clipping/stepping).
    A ``None`` gradient counts as zero (it becomes a zero tensor when any rank has one),
    so every rank takes the same step."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.detach().reshape(-1).to(_comm_device(), torch.float32) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.numel()
        new = flat[offset : offset + n].view_as(p).to(p.device, p.dtype)
        offset += n
        if p.grad is None:
            p.grad = new.clone()
        else:
            p.grad.copy_(new)


def wrap_ddp(model: nn.Module, device: torch.device, **kw: Any) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when a process group is up, else ``model``.

    ``kw`` go to DDP (e.g. ``find_unused_parameters=True`` for models that leave some
    parameters out of a step's graph). Save and evaluate :func:`unwrap` of the result.
    """
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **kw)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return getattr(model, "module", model) if _is_ddp(model) else model


def _is_ddp(model: nn.Module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(model, DistributedDataParallel)


# ------------------------------------------------------------------- randomness/state
def seed_rank(seed: int) -> None:
    """Give each rank its own sampling stream after the shared, seeded initialisation.

    Rank 0 keeps its current state (a one-process job is the plain single-process run);
    rank ``r > 0`` reseeds Python, NumPy and torch from ``(seed, r)``.
    """
    r = rank()
    if r == 0:
        return
    seed_everything(int(seed) + 1_000_003 * r)


def gather_rank_states(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint extras holding every rank's own ``state`` (e.g. its RNG and data-stream
    states): ``{"world_size": W, "rank_states": [rank 0's, rank 1's, ...]}``, or just
    ``{"world_size": 1}`` in one process (whose state the checkpoint holds at top level).
    Every rank must call it."""
    if not active():
        return {"world_size": 1}
    states: list[Any] = [None] * world_size()
    dist.all_gather_object(states, state)
    return {"world_size": world_size(), "rank_states": states}


def rank_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """This rank's entry of ``checkpoint["rank_states"]`` (see :func:`gather_rank_states`);
    for a single-process checkpoint, the checkpoint itself. Resuming needs the world size
    the checkpoint was written with (a ``ValueError`` says so otherwise)."""
    saved = int(checkpoint.get("world_size", 1))
    if saved != world_size():
        raise ValueError(
            f"the checkpoint was written by {saved} process(es) but this job has "
            f"{world_size()}; resume with the same number of processes"
        )
    return checkpoint["rank_states"][rank()] if saved > 1 else checkpoint


@contextmanager
def local_main_first() -> Iterator[None]:
    """Run the body on each node's local rank 0 first, then on the other ranks (e.g. so
    one process per node generates and caches a dataset that the others then read)."""
    first = local_rank() == 0
    if not first:
        barrier()
    try:
        yield
    finally:
        if first:
            barrier()


# ------------------------------------------------------------------------ evaluation
def shard_range(n: int, r: int | None = None, w: int | None = None) -> Tensor:
    """Rank ``r``'s contiguous slice of ``0..n-1`` (sizes differ by at most one)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return torch.tensor_split(torch.arange(n), w)[r]


# ------------------------------------------------------------------------ debugging
def parameter_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter's bytes (equal digests: bitwise equal weights)."""
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def debugging() -> bool:
    """Whether ``$GLIMPSE_DDP_DEBUG`` is set (:func:`debug_record` writes records)."""
    return bool(os.environ.get(DEBUG_ENV))


def debug_record(
    step: int, module: nn.Module, indices: Tensor | None = None, **values: Any
) -> None:
    """With ``$GLIMPSE_DDP_DEBUG`` set, append ``{rank, step, params digest, indices,
    values}`` as one JSON line to ``<folder>/rank<r>.jsonl`` (see the module docstring)."""
    folder = os.environ.get(DEBUG_ENV)
    if not folder:
        return
    record = {"rank": rank(), "world_size": world_size(), "step": int(step)}
    record["params"] = parameter_digest(unwrap(module))
    if indices is not None:
        record["indices"] = [int(i) for i in indices.reshape(-1).tolist()]
    record.update({k: float(v) for k, v in values.items()})
    path = Path(folder) / f"rank{rank()}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
