"""ONE training loop for every trainer: :func:`fit` (DESIGN.md, "One loop").

A trainer is a config, a :class:`Method` (its model, optimiser, data stream and three
functions: one update, a validation, a final report) and :func:`fit`, which owns everything
else, written once:

- the iteration: :attr:`Budget.total_updates` updates, a validation every
  :attr:`Budget.eval_every` updates (an "epoch" of an epoch-based trainer; a block of
  rollouts for PPO) and after the last one, with a progress bar per block;
- data-parallel training under ``torchrun`` (:mod:`glimpse.distributed`): the run folder
  on rank 0, rank 0's weights everywhere, an own sampling stream per rank, gradients
  averaged over ranks by :func:`apply_gradients` (or DDP for ``forward`` models), rank
  means of the logged scalars, sharded exact evaluation;
- the learning-rate schedule over all updates (:func:`glimpse.training.lr_scheduler`),
  stretched when ``--resume`` asks for more;
- last/best checkpoints (best on validation accuracy) holding every rank's RNG and
  data-stream state, so ``--resume`` continues bit for bit;
- the playback hook (:meth:`Method.log_images`) at every validation;
- the final test evaluation of the best-on-validation weights (:meth:`Method.report`) and
  ``metrics.json`` in ONE schema (:data:`METRICS_KEYS`) for every trainer.

In stable-baselines3's words: ``learn()`` is written once, each algorithm writes its
``train()``. The REINFORCE trainers (RAM, DRAM; :mod:`agents.train`), PPO-hybrid
(:mod:`agents.ppo_train`), the parts agent (:mod:`agents.parts_train`) and the soft
baselines (:mod:`soft_baselines.train`) are :class:`Method` s; SB3's RecurrentPPO keeps its
own ``learn()`` but writes the same checkpoints and schema through :class:`Checkpoints`
and :func:`metrics_record`.

``metrics.json`` (:data:`METRICS_KEYS`, every key always present, ``None`` where a trainer
has no such quantity):

- ``schema``: 1; ``method``: the results' method name (``ram``, ``dram``, ``ppo-hybrid``,
  ``sb3-recurrent-ppo``, ``parts``, ``soft-<module>``, and the controls ``ram-conv``,
  ``glimpse-random``, ``glimpse-grid``, ``lowres-cnn``); ``task``; ``run``; ``seed``;
- ``test_accuracy``, ``test_error``: the headline protocol on the test split;
  ``val_best_accuracy``: the selection criterion (validation accuracy of ``best.pt``);
- ``protocol``: the headline evaluation protocol (hard agents: ``single-mean`` or
  ``single-sampled``, chosen on validation; ``deterministic`` for a soft model or a
  deterministic SB3 policy); ``protocols``: ``{label: {"val_error", "test_error", ...}}``
  for every protocol evaluated; ``selection``: how the checkpoint and protocol were chosen;
- ``epochs`` (validation blocks planned), ``updates`` (optimiser updates or rollouts done),
  ``images_seen`` (training images = episodes), ``env_steps`` (glimpses taken; ``None``
  for soft models), ``global_step_unit`` (what TensorBoard's global step counts);
- ``train_seconds`` (wall seconds of training and validation, summed over resumed
  sessions), ``train_seconds_this_session``, ``start_update`` (0 unless resumed);
- ``train_flops``: FLOPs of the first update of the session (counted by
  :class:`torch.utils.flop_counter.FlopCounterMode`, forward + backward) times the updates
  done, summed over ranks; ``train_flops_per_update``; ``inference_flops_per_image`` and
  ``pixels_per_image`` (pixels the model reads per image: glimpse pixels for hard agents,
  the whole image for soft models, the downsampled one for ``lowres-cnn``); ``params``;
- ``world_size``, ``machine``, ``command``; ``paper_error``/``paper_ref`` (the paper's
  figure for this task and method, or ``None``);
- ``details``: the trainer's own extra numbers (e.g. ``test_digit_accuracy``, part hits);
- ``stopped``: ``budget`` (every planned update done) or ``patience`` (``--patience``
  validations without improvement); ``best_update``: the update after which ``best.pt``
  was validated; ``train_flops_to_best``: the training FLOPs to it (``train_flops_per_update
  x best_update``); ``history``: every validation as ``{"updates", "images_seen",
  "train_seconds", "val_error"}`` (kept across ``--resume``), what the curves of validation
  error against training FLOPs and wall time are drawn from.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from glimpse import distributed
from glimpse.precision import autocast, resolve_precision
from glimpse.results import command_line, machine_description
from glimpse.training import (
    Run,
    checkpoint_state,
    lr_scheduler,
    progress,
    restore_checkpoint_state,
    rng_state,
    set_rng_state,
)

__all__ = [
    "METRICS_KEYS",
    "Budget",
    "Checkpoints",
    "Method",
    "Report",
    "Update",
    "apply_gradients",
    "count_update_flops",
    "fit",
    "metrics_record",
    "training_run",
]

SCHEMA_VERSION = 1

METRICS_KEYS: tuple[str, ...] = (
    "schema",
    "method",
    "task",
    "run",
    "seed",
    "test_accuracy",
    "test_error",
    "val_best_accuracy",
    "protocol",
    "protocols",
    "selection",
    "epochs",
    "updates",
    "images_seen",
    "env_steps",
    "global_step_unit",
    "train_seconds",
    "train_seconds_this_session",
    "start_update",
    "train_flops",
    "train_flops_per_update",
    "inference_flops_per_image",
    "pixels_per_image",
    "params",
    "world_size",
    "machine",
    "command",
    "paper_error",
    "paper_ref",
    "details",
    "stopped",
    "best_update",
    "train_flops_to_best",
    "history",
)
"""The keys of every trainer's ``metrics.json`` (see the module docstring)."""

TIMING_KEYS = ("train_seconds", "train_seconds_this_session", "machine", "command")
"""Keys that differ between two otherwise identical runs."""


# ----------------------------------------------------------------------------- pieces
@dataclass(frozen=True)
class Budget:
    """How long a method trains and how its progress is counted."""

    total_updates: int
    """Updates (optimiser steps, or PPO rollouts) in the whole run."""
    eval_every: int
    """Updates between validations (and checkpoints); the last update is always validated."""
    images_per_update: int
    """Training images (episodes) one update consumes, summed over ranks."""
    env_steps_per_update: int | None = None
    """Environment steps (glimpses) of one update, summed over ranks (``None``: no env)."""
    step_unit: Literal["images", "env_steps"] = "images"
    """What TensorBoard's global step counts."""

    def __post_init__(self) -> None:
        for name in ("total_updates", "eval_every", "images_per_update"):
            if getattr(self, name) < 1:
                raise ValueError(f"Budget.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def epochs(self) -> int:
        """Validation blocks in the run (the last may be shorter)."""
        return -(-self.total_updates // self.eval_every)

    def global_step(self, updates: int) -> int:
        """TensorBoard's global step after ``updates`` updates."""
        per = self.env_steps_per_update if self.step_unit == "env_steps" else None
        return updates * (per if per is not None else self.images_per_update)


@dataclass
class Update:
    """What one :meth:`Method.update` did."""

    metrics: dict[str, float] = field(default_factory=dict)
    """This rank's training scalars of the update (may be empty; see
    :meth:`Method.train_scalars`)."""
    indices: Tensor | None = None
    """The training images it used (for the ``$GLIMPSE_DDP_DEBUG`` records)."""
    debug: dict[str, float] | None = None
    """Values of the debug record (default: ``metrics``)."""


@dataclass
class Report:
    """The final evaluation of the selected (best-on-validation) weights."""

    test_error: float
    """Headline test error (fraction)."""
    protocol: str
    """Headline protocol (see the module docstring)."""
    protocols: dict[str, dict[str, Any]]
    """Every protocol evaluated: ``{label: {"val_error": ..., "test_error": ..., ...}}``
    (a missing ``val_error`` is that of the selected checkpoint, ``1 - val_best_accuracy``)."""
    selection: str
    """How the checkpoint and the headline protocol were chosen (validation only)."""
    details: dict[str, Any] = field(default_factory=dict)
    """The trainer's own extra numbers."""
    paper_error: float | None = None
    paper_ref: str | None = None


class Method(abc.ABC):
    """A trainer's own part, handed to :func:`fit`. Set in ``__init__``: :attr:`name`,
    :attr:`model`, :attr:`optimizer`, :attr:`stream`, :attr:`budget` (and :attr:`net` if
    training goes through a wrapper such as DDP)."""

    name: str
    """The results' method name (``ram``, ``soft-se``, ...)."""
    task: str
    """The task / dataset name."""
    model: nn.Module
    """The weights that are checkpointed, selected and evaluated (never a DDP wrapper)."""
    optimizer: torch.optim.Optimizer
    stream: Any
    """The training data stream (:class:`glimpse.data.IndexStream`-like: ``state_dict``,
    ``load_state_dict``), checkpointed per rank."""
    budget: Budget
    loss_key: str = "losses/total"
    """The training scalar shown in the progress bar."""

    @abc.abstractmethod
    def update(self) -> Update:
        """One update on this rank's next batch: forward, loss, :func:`apply_gradients`.
        :func:`fit` steps the schedule after it."""

    def train_scalars(self, last: Update) -> dict[str, float]:
        """The training scalars to log now (a collective: every rank calls it at the same
        updates): by default the rank mean of the last update's metrics."""
        return distributed.mean_metrics(last.metrics)

    @abc.abstractmethod
    def validate(self) -> dict[str, float]:
        """Metrics on the validation split (``accuracy`` and ``error`` at least; logged as
        ``eval/<key>``); every rank calls it."""

    def log_images(self, run: Run, step: int) -> None:  # noqa: B027 -- optional hook
        """The playback hook, after every validation (rank 0's ``run`` writes)."""

    @abc.abstractmethod
    def report(self) -> Report:
        """The final evaluation of :attr:`model` (already holding the best weights)."""

    def cost(self) -> dict[str, float | int | None]:
        """``inference_flops_per_image``, ``pixels_per_image`` and ``params`` of the model."""
        return {"inference_flops_per_image": None, "pixels_per_image": None, "params": None}

    def describe(self) -> str | None:
        """A line printed before training (``None``: nothing)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Extra checkpoint entries of the method (e.g. an AMP scaler)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 -- optional
        """Restore :meth:`state_dict` from a checkpoint (the whole checkpoint is passed)."""

    def progress_scalars(self, last: Update) -> dict[str, float] | None:
        """The ``train/accuracy`` and loss of one update for the progress bar (``None``: the
        bar is updated only when scalars are logged)."""
        m = last.metrics
        if "train/accuracy" in m and self.loss_key in m:
            return {"acc": m["train/accuracy"], "loss": m[self.loss_key]}
        return None


def apply_gradients(
    loss: Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_clip: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    ddp: bool = False,
) -> None:
    """Backward ``loss`` and take one optimiser step: zero the gradients, backward (scaled
    by ``scaler`` if given), average the gradients over ranks (skipped when ``ddp``: DDP
    has done it), clip the global norm to ``grad_clip`` (0: no clipping; unscaled first),
    step. Backward and step run outside any autocast region (``--precision bf16``: the
    update's forward is autocast, its gradients and fp32 master weights are not)."""
    with torch.autocast(device_type=loss.device.type, enabled=False):
        _apply_gradients(loss, model, optimizer, grad_clip, scaler, ddp)


def _apply_gradients(
    loss: Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    scaler: torch.amp.GradScaler | None,
    ddp: bool,
) -> None:
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
    if not ddp:
        distributed.allreduce_gradients(model.parameters())
    if grad_clip > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


@contextmanager
def count_update_flops() -> Iterator[Callable[[], int]]:
    """``with count_update_flops() as flops:`` FLOPs of everything run inside (forward and
    backward), by :class:`torch.utils.flop_counter.FlopCounterMode`; ``flops()`` after."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        yield lambda: int(counter.get_total_flops())


# ------------------------------------------------------------------------ run lifecycle
@contextmanager
def training_run(cfg: Any) -> Iterator[tuple[Any, Run]]:
    """``with training_run(cfg) as (cfg, run):`` inside a :func:`glimpse.distributed.session`:
    rank 0's config on every rank (one run name, even when it was generated from the
    time), and its :class:`glimpse.training.Run` (``cfg.run_name`` under
    ``cfg.runs_root``, resumed when ``cfg.resume``), which writes on rank 0 only and is
    closed on exit. A failure to open the run on any rank raises on every rank."""
    cfg = distributed.broadcast_object(cfg)
    run = distributed.collective_call(
        lambda: Run(
            cfg.run_name, cfg, cfg.runs_root, resume=cfg.resume, enabled=distributed.is_main()
        )
    )
    try:
        yield cfg, run
    finally:
        run.close()


class Checkpoints:
    """``last``/``best`` checkpoints of a run with every rank's RNG and data-stream state
    (:func:`glimpse.distributed.gather_rank_states`); best = highest validation accuracy."""

    def __init__(self, run: Run, stream: Any = None) -> None:
        self.run, self.stream = run, stream

    def resume(self) -> dict[str, Any] | None:
        """The last checkpoint (rank 0 reads, every rank gets it), or ``None`` for a fresh
        run, whose hyperparameters are then logged once."""
        state = distributed.main_then_broadcast(lambda: self.run.resume_state("cpu"))
        if state is None:
            self.run.log_hparams()
        return state

    def restore_rank_state(self, state: dict[str, Any]) -> None:
        """This rank's RNG and data-stream state from checkpoint ``state``."""
        mine = distributed.rank_state(state)
        if "rng" in mine:
            set_rng_state(mine["rng"])
        if self.stream is not None and "stream" in mine:
            self.stream.load_state_dict(mine["stream"])

    def rank_extras(self) -> dict[str, Any]:
        """The data-stream state and every rank's RNG/stream states (every rank calls)."""
        stream = self.stream.state_dict() if self.stream is not None else None
        mine: dict[str, Any] = {"rng": rng_state()}
        extra: dict[str, Any] = {}
        if stream is not None:
            mine["stream"] = stream
            extra["stream"] = stream
        return extra | distributed.gather_rank_states(mine)

    def save(self, state: dict[str, Any], improved: bool) -> None:
        """Flush the logs, write ``best`` (if ``improved``) and ``last`` (rank 0)."""
        if self.run.enabled:
            self.run.writer.flush()
        if improved:
            self.run.save_checkpoint(state, "best")
        self.run.save_checkpoint(state, "last")

    def best_weights(self) -> dict[str, Any] | None:
        """The model weights of ``best`` (rank 0 reads, every rank gets them), or ``None``."""

        def load() -> dict[str, Any] | None:
            state = self.run.load_checkpoint("best", "cpu")
            return None if state is None else state["model"]

        return distributed.main_then_broadcast(load)


def metrics_record(
    *,
    method: str,
    task: str,
    cfg: Any,
    report: Report,
    val_best_accuracy: float,
    budget: Budget | None,
    updates: int,
    images_seen: int,
    env_steps: int | None,
    global_step_unit: str,
    train_seconds: float,
    train_seconds_this_session: float,
    start_update: int,
    train_flops_per_update: int | None,
    cost: dict[str, Any],
    device: torch.device,
    epochs: int,
    stopped: str = "budget",
    best_update: int | None = None,
    history: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """One ``metrics.json`` in the schema of :data:`METRICS_KEYS`."""
    per_update = train_flops_per_update
    record = {
        "schema": SCHEMA_VERSION,
        "method": method,
        "task": task,
        "run": cfg.run_name,
        "seed": cfg.seed,
        "test_accuracy": 1 - report.test_error,
        "test_error": report.test_error,
        "val_best_accuracy": val_best_accuracy,
        "protocol": report.protocol,
        "protocols": report.protocols,
        "selection": report.selection,
        "epochs": epochs,
        "updates": updates,
        "images_seen": images_seen,
        "env_steps": env_steps,
        "global_step_unit": global_step_unit,
        "train_seconds": train_seconds,
        "train_seconds_this_session": train_seconds_this_session,
        "start_update": start_update,
        "train_flops": None if per_update is None else per_update * updates,
        "train_flops_per_update": per_update,
        "inference_flops_per_image": cost.get("inference_flops_per_image"),
        "pixels_per_image": cost.get("pixels_per_image"),
        "params": cost.get("params"),
        "world_size": distributed.world_size(),
        "machine": machine_description(device),
        "command": command_line(),
        "paper_error": report.paper_error,
        "paper_ref": report.paper_ref,
        "details": report.details,
        "stopped": stopped,
        "best_update": best_update,
        "train_flops_to_best": None
        if per_update is None or best_update is None
        else per_update * best_update,
        "history": history or [],
    }
    assert tuple(record) == METRICS_KEYS  # the schema is written in one place
    return record


# -------------------------------------------------------------------------- the loop
def fit(build: Callable[[Any, torch.device, Run], Method], cfg: Any) -> dict[str, Any]:
    """Train the :class:`Method` that ``build(cfg, device, run)`` makes and return its
    ``metrics.json`` record (see the module docstring for what this owns).

    ``cfg`` is a resolved :class:`glimpse.training.RunConfig` with ``lr_schedule`` and
    ``log_every``; ``build`` runs inside the process group and the run (so rank 0's
    ``cfg`` and the run folder exist) and sets up the method's data, model and optimiser.
    """
    with distributed.session(cfg.setup()) as device:
        precision = resolve_precision(cfg.precision, device, quiet=not distributed.is_main())
        if precision != cfg.precision:  # config.json holds what the run does
            cfg = dataclasses.replace(cfg, precision=precision)
        with training_run(cfg) as (cfg, run):
            method = build(cfg, device, run)
            return _fit(method, cfg, run, device)


def _fit(method: Method, cfg: Any, run: Run, device: torch.device) -> dict[str, Any]:
    model, opt, budget = method.model, method.optimizer, method.budget
    distributed.broadcast_parameters(model)  # rank 0's weights everywhere
    distributed.seed_rank(cfg.seed)  # own sampling noise per rank
    sched = lr_scheduler(opt, cfg.lr_schedule, budget.total_updates)
    ckpts = Checkpoints(run, method.stream)
    done, best, train_seconds = 0, -1.0, 0.0
    history: list[dict[str, float]] = []
    best_update: int | None = None
    stale = 0  # validations since the best one
    state = ckpts.resume()
    if state is not None:
        restore_checkpoint_state(state, model, opt, sched)
        ckpts.restore_rank_state(state)
        method.load_state_dict(state)
        done, best = _updates_done(state, budget), state["best"]
        train_seconds = float(state.get("train_seconds", state.get("elapsed", 0.0)))
        history = list(state.get("history", []))
        best_update, stale = state.get("best_update"), int(state.get("stale", 0))
    start = done
    line = method.describe()
    if line and distributed.is_main():
        print(line, flush=True)
    flops_per_update: int | None = None
    t_session = time.perf_counter()
    t_block = t_session
    patience = int(getattr(cfg, "patience", 0) or 0)
    precision = getattr(cfg, "precision", "fp32")
    cast = lambda: autocast(precision, device)  # noqa: E731 -- forward passes only
    while done < budget.total_updates and not (patience and stale >= patience):
        block_end = min(budget.total_updates, (done // budget.eval_every + 1) * budget.eval_every)
        epoch = done // budget.eval_every
        model.train()
        bar = progress(
            range(done, block_end),
            total=block_end - done,
            desc=f"epoch {epoch + 1}/{budget.epochs}",
        )
        t_log, images_log = time.perf_counter(), 0
        for it in bar:
            first = flops_per_update is None
            if first:
                with count_update_flops() as flops, cast():
                    last = method.update()
                flops_per_update = int(distributed.all_reduce(float(flops())))
            else:
                with cast():
                    last = method.update()
            sched.step()
            done = it + 1
            global_step = budget.global_step(done)
            images_log += budget.images_per_update
            if distributed.debugging():  # tests: per-step, per-rank weights and batch
                values = last.metrics if last.debug is None else last.debug
                distributed.debug_record(global_step, model, last.indices, **values)
            shown = method.progress_scalars(last)
            local = it - epoch * budget.eval_every
            if local % cfg.log_every == 0 or done == block_end:
                scalars = method.train_scalars(last)
                scalars["charts/lr"] = opt.param_groups[0]["lr"]
                now = time.perf_counter()
                scalars["charts/images_per_s"] = images_log / max(now - t_log, 1e-9)
                t_log, images_log = now, 0
                run.log_scalars(scalars, global_step)
                if shown is None and "train/accuracy" in scalars:
                    shown = {"acc": scalars["train/accuracy"], "loss": scalars.get(method.loss_key)}
            if shown is not None and hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items() if v is not None})
        distributed.broadcast_buffers(model)  # rank 0's BatchNorm statistics everywhere
        model.eval()
        with cast():
            val = method.validate()
        train_seconds += time.perf_counter() - t_block
        t_block = time.perf_counter()
        scalars = {f"eval/{k}": v for k, v in val.items() if k != "n"}
        scalars["charts/elapsed_s"] = train_seconds
        run.log_scalars(scalars, global_step)
        method.log_images(run, global_step)
        improved = val["accuracy"] > best
        best = max(best, val["accuracy"])
        if improved:
            best_update, stale = done, 0
        else:
            stale += 1
        history.append(
            {
                "updates": done,
                "images_seen": done * budget.images_per_update,
                "train_seconds": train_seconds,
                "val_error": 1 - val["accuracy"],
            }
        )
        ckpt = checkpoint_state(
            model,
            opt,
            sched,
            epoch=-(-done // budget.eval_every),
            updates=done,
            global_step=global_step,
            best=best,
            train_seconds=train_seconds,
            history=history,
            best_update=best_update,
            stale=stale,
            **method.state_dict(),
            **ckpts.rank_extras(),
        )
        ckpts.save(ckpt, improved)
        if distributed.is_main():
            print(
                f"epoch {-(-done // budget.eval_every)}/{budget.epochs}: val accuracy "
                f"{val['accuracy']:.4f} (best {best:.4f}), {train_seconds:.0f} s",
                flush=True,
            )
            if patience and stale >= patience and done < budget.total_updates:
                print(
                    f"stopping: {stale} validations without improvement (--patience "
                    f"{patience}); best after update {best_update}",
                    flush=True,
                )
    best_weights = ckpts.best_weights()
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    with cast():
        report = method.report()
    for entry in report.protocols.values():  # one protocol, selected on it: its val error
        entry.setdefault("val_error", 1 - best)
    result = metrics_record(
        method=method.name,
        task=method.task,
        cfg=cfg,
        report=report,
        val_best_accuracy=best,
        budget=budget,
        updates=done,
        images_seen=done * budget.images_per_update,
        env_steps=None
        if budget.env_steps_per_update is None
        else done * budget.env_steps_per_update,
        global_step_unit=budget.step_unit,
        train_seconds=train_seconds,
        train_seconds_this_session=time.perf_counter() - t_session,
        start_update=start,
        train_flops_per_update=flops_per_update,
        cost=method.cost(),
        device=device,
        epochs=budget.epochs,
        stopped="budget" if done >= budget.total_updates else "patience",
        best_update=best_update,
        history=history,
    )
    run.log_scalars({"eval/test_accuracy": result["test_accuracy"]}, budget.global_step(done))
    run.write_json("metrics.json", result)
    if distributed.is_main():
        for label, r in report.protocols.items():
            spread = f" ± {r['test_error_std']:.2%}" if "test_error_std" in r else ""
            seeds = r.get("eval_seeds")
            tail = f"; {len(seeds)} evaluation seed(s)" if seeds else ""
            print(
                f"{label}: test error {r['test_error']:.2%}{spread} "
                f"(val {r['val_error']:.2%}{tail})",
                flush=True,
            )
        ref = (
            "no paper figure"
            if report.paper_ref is None
            else f"paper {report.paper_error:.2%} ({report.paper_ref})"
        )
        print(
            f"test error {report.test_error:.2%} ({report.protocol}, chosen on validation); {ref}",
            flush=True,
        )
    return result


def _updates_done(state: dict[str, Any], budget: Budget) -> int:
    """Updates a checkpoint has done (checkpoints from before :mod:`glimpse.loop` count
    epochs or PPO rollouts)."""
    if "updates" in state:
        return int(state["updates"])
    if "rollouts" in state:
        return int(state["rollouts"])
    return int(state["epoch"]) * budget.eval_every
