"""Training hard-attention agents (RAM, DRAM) with batched REINFORCE: the library side of
``scripts/train_ram.py`` and ``scripts/train_dram.py``.

Run folder ``runs/<run_name>/``: ``config.json``, TensorBoard events, ``last.pt`` and
``best.pt`` (atomic; ``--resume`` continues from ``last.pt``), ``metrics.json`` (final
test metrics).

TensorBoard tags; the global step is the number of training episodes (images) seen:

- ``losses/{total,classification,policy,baseline,entropy}``, ``train/{accuracy,reward}``,
  ``charts/{baseline,advantage_abs,std,lr,images_per_s}`` every ``log_every`` batches;
- ``eval/{accuracy,error}`` (validation split) after every epoch;
- ``eval/trajectories/video`` and ``eval/trajectories/steps/<global step>``: glimpse
  trajectories of the first ``playback`` validation images (:func:`glimpse.viz.log_trajectories`),
  labelled with the true and predicted class;
- ``hparams``: the config as a text table.

Data-parallel (``torchrun``, :mod:`glimpse.distributed`): ``batch_size`` episodes per
rank and step, so the global batch (and the global step's increment) is ``batch_size x
world_size``; each rank plays its own shard of the training images with its own location
noise, gradients are averaged over ranks before clipping, logged training scalars are
rank means, evaluation is sharded and exact; rank 0 alone writes the run folder. Launch::

    torchrun --standalone --nproc_per_node 2 scripts/train_ram.py --threads 1
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from agents.playback import log_playback
from agents.policy import GlimpsePolicy
from agents.reinforce import (
    PROTOCOLS,
    ReinforceConfig,
    collect_rollout,
    episode_draws,
    predict,
    reinforce_loss,
)
from envs import PROXY_TASKS, TASKS, GlimpseVectorEnv, ImageSource, MDPConfig
from glimpse import distributed
from glimpse.data import get_dataset
from glimpse.evaluation import evaluate
from glimpse.results import command_line, machine_description, paper_figure
from glimpse.training import (
    Rule,
    Run,
    RunConfig,
    check_config,
    load_weights,
    progress,
)

__all__ = ["POLICIES", "TASK_IDS", "HardTrainConfig", "build_envs", "train_reinforce"]

TASK_IDS = {
    "mnist": "Glimpse/MNIST-v0",
    "translated60": "Glimpse/TranslatedMNIST60-v0",
    "cluttered60": "Glimpse/ClutteredMNIST60-v0",
    "cluttered100": "Glimpse/ClutteredMNIST100-v0",
    "multimnist": "Glimpse/MultiMNIST-v0",
    "twodigit100": "Glimpse/TwoDigit100-v0",
}
"""Dataset name -> registered task whose defaults (``T``, ``g``, ``k``) a run inherits."""

_GENERATED = ("translated60", "cluttered60", "cluttered100", "multimnist", "twodigit100")
"""Generated datasets: they take ``limit`` (the first ``n`` images, generated alone)."""


def task_defaults(task: str) -> dict[str, Any]:
    """The registered defaults of dataset ``task`` (:data:`TASK_IDS`)."""
    task_id = TASK_IDS[task]
    return TASKS[task_id] if task_id in TASKS else PROXY_TASKS[task_id]


@dataclass
class HardTrainConfig(RunConfig):
    """Training a hard-attention agent with REINFORCE (RAM: Mnih et al. 2014)."""

    task: Literal[
        "mnist", "translated60", "cluttered60", "cluttered100", "multimnist", "twodigit100"
    ] = "mnist"
    """Dataset / task: 28x28 MNIST, 60x60 translated, 60x60 or 100x100 cluttered, MultiMNIST,
    or twodigit100 (two cluttered digits on 100x100 as one of 100 classes: the FCAN proxy)."""
    agent: Literal["ram", "dram"] = "ram"
    """The agent: RAM (Mnih et al. 2014) or DRAM (Ba et al. 2015)."""
    num_glimpses: int | None = None
    """Glimpses per target ``T`` (default: the task's, e.g. 6 on MNIST, 8 on cluttered)."""
    glimpse_size: int | None = None
    """Glimpse side ``g`` in pixels (default: the task's: 8 on MNIST, 12 otherwise)."""
    num_scales: int | None = None
    """Scales ``k`` per glimpse (default: the task's: 1, 3 or 4)."""
    scale_factor: float = 2.0
    """Each scale covers ``scale_factor`` times the previous one's side."""
    init_location: Literal["center", "random"] = "random"
    """Where the first glimpse of every episode is taken (training and evaluation): the
    image centre, or uniformly at random in [-1, 1]^2 (as some RAM reimplementations do).
    Random is the default since issue 16: better on validation in every comparison made
    (docs/RESULTS.md); in evaluation the draws are seeded per (seed, image, sample)."""
    context_size: int = 25
    """DRAM only: side of the coarse whole-image view that initialises its upper LSTM."""
    std: float = 0.15
    """Standard deviation of the Gaussian location policy (initial value if learned)."""
    learn_std: bool = False
    """Learn the location policy's standard deviation."""
    core: Literal["rnn", "lstm"] = "rnn"
    """Core network: the paper's rectifier RNN or an LSTM (DRAM always uses LSTMs)."""
    hidden: int = 256
    """Core state size."""
    detach_location: bool = True
    """Keep REINFORCE and classification gradients apart: REINFORCE trains only the
    location pathway (RAM: the location head; DRAM: context network, upper LSTM, emission),
    classification the rest (--no-detach-location: the paper's joint gradient, which
    learns much slower here)."""
    lr: float = 1e-3
    """Adam learning rate."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule over all training batches."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    epochs: int = 100
    """Passes over the training split (100: the 28x28 recipe of issue 16, docs/RESULTS.md)."""
    batch_size: int = 128
    """Episodes per gradient step and process (the vector env's ``num_envs``); under
    torchrun the global batch is this times the number of processes."""
    entropy_coef: float = 0.0
    """Weight of the location-entropy bonus."""
    baseline_coef: float = 1.0
    """Weight of the baseline's regression loss."""
    grad_clip: float = 10.0
    """Clip the global gradient norm to this (0 disables)."""
    mc_samples: int = 1
    """``M`` of the Monte-Carlo protocol ``mc<M>`` (M sampled episodes per image, class
    probabilities averaged; M times the inference cost), reported at the end beside the
    single-trajectory protocols, never instead of them (1: not evaluated)."""
    eval_seeds: int = 5
    """Evaluation seeds of the final report: every protocol with random first fixations or
    sampled locations is evaluated under seeds ``0 .. eval_seeds - 1`` (mean and spread)."""
    playback: int = 8
    """Validation images whose glimpse trajectories are logged at each evaluation."""
    train_limit: int = 0
    """Train on only the first this many images of the training split (0: all of it)."""
    eval_limit: int = 0
    """Evaluate on only the first this many images of val and test (0: all; smoke runs)."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default). 1 by default here: faster on the small,
    shared CPU machines this is run on (docs/BENCHMARKS.md); set 0 on a large machine."""
    init_from: str | None = None
    """Warm start: begin from the weights of this checkpoint (a ``.pt`` file or a run
    folder, whose ``best.pt`` is used) with a fresh optimiser and schedule; the agent's
    architecture must match. Ignored when ``--resume`` finds a checkpoint."""

    RULES: ClassVar[dict[str, Rule]] = {
        "num_glimpses": (">=", 1),
        "glimpse_size": (">=", 1),
        "num_scales": (">=", 1),
        "scale_factor": (">=", 1),
        "context_size": (">=", 1),
        "std": (">", 0),
        "hidden": (">=", 1),
        "lr": (">=", 0),
        "weight_decay": (">=", 0),
        "epochs": (">=", 1),
        "batch_size": (">=", 1),
        "entropy_coef": (">=", 0),
        "baseline_coef": (">=", 0),
        "grad_clip": (">=", 0),
        "mc_samples": (">=", 1),
        "eval_seeds": (">=", 1),
        "playback": (">=", 0),
        "train_limit": (">=", 0),
        "eval_limit": (">=", 0),
    }
    RESUMABLE: ClassVar[tuple[str, ...]] = ("epochs",)
    """``--resume --epochs N`` with more epochs extends the run (and its cosine)."""

    def resolved(self) -> HardTrainConfig:
        """A checked copy with the task's defaults filled in and the run name chosen."""
        check_config(self)
        defaults = task_defaults(self.task)
        unset = lambda v, d: d if v is None else v  # noqa: E731 -- 0 is a value, not "unset"
        out = replace(
            self,
            num_glimpses=unset(self.num_glimpses, defaults["num_glimpses"]),
            glimpse_size=unset(self.glimpse_size, defaults["glimpse_size"]),
            num_scales=unset(self.num_scales, defaults["num_scales"]),
            run_name=self.run_name or f"{self.agent}-{self.task}-s{self.seed}-{int(time.time())}",
        )
        if out.agent == "ram" and out.task == "multimnist":
            raise ValueError("RAM classifies one object; use --agent dram for multimnist")
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "mc_samples",
            "eval_seeds",
            "log_every",
        ):
            if getattr(out, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(out, name)}")
        for name in ("train_limit", "eval_limit"):
            if getattr(out, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: all), got {getattr(out, name)}")
        if out.init_from and not Path(out.init_from).exists():  # fail before building data
            raise FileNotFoundError(
                f"--init-from {out.init_from}: no such checkpoint or run folder"
            )
        return out

    def task_num_classes(self) -> int:
        """Classes of the task's dataset as registered (10 unless the task says otherwise;
        :func:`build_envs` takes them from the dataset itself)."""
        return int(task_defaults(self.task).get("num_classes", 10))

    def mdp(self, num_targets: int = 1, num_classes: int | None = None) -> MDPConfig:
        """The env's MDP parameters for this run (``num_classes``: the dataset's; default
        :meth:`task_num_classes`)."""
        return MDPConfig(
            context_size=self.context_size if self.agent == "dram" else 0,
            glimpse_size=self.glimpse_size,
            num_scales=self.num_scales,
            scale_factor=self.scale_factor,
            num_glimpses=self.num_glimpses,
            num_classes=num_classes or self.task_num_classes(),
            num_targets=num_targets,
            init_location=self.init_location,
        )


def build_envs(
    cfg: HardTrainConfig, device: torch.device
) -> tuple[GlimpseVectorEnv, dict[str, GlimpseVectorEnv]]:
    """The training env (shuffled train split, its first ``cfg.train_limit`` images if
    set) and ordered evaluation envs (val, test; their first ``cfg.eval_limit`` images if
    set). The number of classes is the dataset's (``len(dataset.classes)``)."""
    kw: dict[str, Any] = {"val_size": cfg.val_size}
    if cfg.download:
        kw["download"] = True
    limits = {"train": cfg.train_limit, "val": cfg.eval_limit, "test": cfg.eval_limit}
    sources: dict[str, ImageSource] = {}
    num_classes = 0
    for split, n in limits.items():
        lim = {"limit": n} if n and cfg.task in _GENERATED else {}
        ds = get_dataset(cfg.task, split, cfg.data_root, **kw, **lim)
        num_classes = max(num_classes, len(ds.classes))
        src = ImageSource.from_any(ds, device=device)
        if n and n < len(src):  # MNIST takes no limit: the first n of the split
            boxes = None if src.boxes is None else src.boxes[:n]
            src = ImageSource(src.images[:n], src.labels[:n], boxes)
        sources[split] = src
    mdp = cfg.mdp(sources["train"].num_targets, num_classes)
    train_env = GlimpseVectorEnv(sources["train"], cfg.batch_size, mdp, device=device)
    n_eval = cfg.eval_batch_size * cfg.mc_samples
    evals = {
        split: GlimpseVectorEnv(sources[split], n_eval, mdp, device=device, shuffle=False)
        for split in ("val", "test")
    }
    return train_env, evals


def evaluate_policy(
    policy: GlimpsePolicy,
    venv: GlimpseVectorEnv,
    cfg: HardTrainConfig,
    desc: str = "eval",
    protocol: str = "single-mean",
    seed: int | None = None,
) -> dict[str, float]:
    """Accuracy of ``policy`` on every image of ``venv``'s split under ``protocol`` (one of
    :data:`agents.reinforce.PROTOCOLS`; ``"mc"`` averages ``cfg.mc_samples`` episodes) and
    evaluation seed ``seed`` (default ``cfg.seed``): the first fixations and location noise
    of image ``i``, sample ``m`` come from ``(seed, i, m)``, so the result does not depend on
    ``cfg.eval_batch_size`` (shared evaluation; under ``torchrun`` every rank must call it:
    each plays its slice of the split)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    samples = cfg.mc_samples if protocol == "mc" else 1
    sampled = protocol != "single-mean"
    seed = cfg.seed if seed is None else seed

    def run(idx: torch.Tensor) -> torch.Tensor:
        preds, _ = predict(policy, venv, idx, samples, sampled=sampled, seed=seed)
        return preds

    return distributed.evaluate_sharded(
        run, venv.source.labels, cfg.eval_batch_size, desc, evaluate
    )


TRAIN_SAMPLE_ID = 2**16 - 1
"""The sample index of training episodes in :func:`agents.reinforce.episode_draws` (no
evaluation uses it: evaluation samples are ``0 .. M - 1``)."""


def train_first_fixations(cfg: HardTrainConfig, global_step: int) -> dict[str, Any] | None:
    """Reset options of the next training batch: with ``init_location="random"``, first
    fixations drawn from ``(seed, episode number, TRAIN_SAMPLE_ID)``. The episode number
    is the position in the global batch (ranks take interleaved positions, as their
    :class:`envs.IndexStream` shards do), so a resumed run (which restores
    ``global_step``) sees the same first fixations as one that never stopped, and under
    ``torchrun`` every image gets the first fixation it gets in one process."""
    if cfg.init_location != "random":
        return None
    world = distributed.world_size()
    idx = global_step + distributed.rank() + world * torch.arange(cfg.batch_size)
    init, _ = episode_draws(cfg.seed, idx, torch.full_like(idx, TRAIN_SAMPLE_ID), 0)
    return {"init_loc": init}


def protocol_name(protocol: str, mc_samples: int) -> str:
    """The results label of ``protocol``: ``single-mean``, ``single-sampled`` or ``mc<M>``."""
    return f"mc{mc_samples}" if protocol == "mc" else protocol


def evaluate_protocols(
    policy: GlimpsePolicy,
    envs: dict[str, GlimpseVectorEnv],
    cfg: HardTrainConfig,
    protocols: tuple[str, ...] = ("single-mean", "single-sampled"),
    eval_seeds: int = 5,
) -> dict[str, dict[str, Any]]:
    """Errors of ``policy`` on each split of ``envs`` (e.g. ``{"val": ..., "test": ...}``)
    under each protocol, over evaluation seeds ``0 .. eval_seeds - 1``.

    Returns ``{label: {"eval_seeds": [...], "mc_samples": M, "<split>_errors": [...],
    "<split>_error": mean, "<split>_error_std": sample std (0 for one seed)}}`` with labels
    from :func:`protocol_name`. A protocol without randomness (mean locations from the
    centre) is evaluated with one seed only: every seed gives the same predictions.
    """
    if eval_seeds < 1:
        raise ValueError(f"eval_seeds must be >= 1, got {eval_seeds}")
    out: dict[str, dict[str, Any]] = {}
    for protocol in protocols:
        random_free = protocol == "single-mean" and cfg.init_location == "center"
        seeds = [0] if random_free else list(range(eval_seeds))
        label = protocol_name(protocol, cfg.mc_samples)
        res: dict[str, Any] = {
            "eval_seeds": seeds,
            "mc_samples": cfg.mc_samples if protocol == "mc" else 1,
        }
        for split, venv in envs.items():
            runs = [
                evaluate_policy(policy, venv, cfg, f"{split} {label} seed {s}", protocol, s)
                for s in seeds
            ]
            for key, name in (("error", "error"), ("digit_accuracy", "digit_error")):
                if key not in runs[0]:
                    continue
                errs = [r[key] if key == "error" else 1 - r[key] for r in runs]
                t = torch.tensor(errs, dtype=torch.float64)
                res[f"{split}_{name}s"] = errs
                res[f"{split}_{name}"] = t.mean().item()
                res[f"{split}_{name}_std"] = t.std().item() if len(errs) > 1 else 0.0
        out[label] = res
    return out


def headline_protocol(protocols: dict[str, dict[str, Any]]) -> str:
    """The single-trajectory protocol with the lower mean validation error (ties: the
    deterministic ``single-mean``): the headline, chosen on validation only."""
    single = [p for p in ("single-mean", "single-sampled") if p in protocols]
    if not single:
        raise ValueError(f"no single-trajectory protocol among {sorted(protocols)}")
    return min(single, key=lambda p: (protocols[p]["val_error"], p != "single-mean"))


def build_ram(
    cfg: HardTrainConfig,
    glimpse_shape: tuple[int, int, int, int],
    num_targets: int,
    num_classes: int | None = None,
) -> GlimpsePolicy:
    """RAM sized from the config, the env's glimpse shape and its number of classes
    (default: the task's, :meth:`HardTrainConfig.task_num_classes`)."""
    from agents.ram import RAM

    return RAM(
        glimpse_shape,
        num_classes=num_classes or cfg.task_num_classes(),
        hidden=cfg.hidden,
        core=cfg.core,
        std=cfg.std,
        learn_std=cfg.learn_std,
        detach_location=cfg.detach_location,
    )


def build_dram(
    cfg: HardTrainConfig,
    glimpse_shape: tuple[int, int, int, int],
    num_targets: int,
    num_classes: int | None = None,
) -> GlimpsePolicy:
    """DRAM sized from the config, the env's glimpse shape, its context view and number of
    classes (default: the task's)."""
    from agents.dram import DRAM

    context_shape = (glimpse_shape[1], cfg.context_size, cfg.context_size)
    return DRAM(
        glimpse_shape,
        context_shape,
        num_classes=num_classes or cfg.task_num_classes(),
        hidden=cfg.hidden,
        std=cfg.std,
        learn_std=cfg.learn_std,
        detach_location=cfg.detach_location,
    )


POLICIES: dict[str, Callable[..., GlimpsePolicy]] = {
    "ram": build_ram,
    "dram": build_dram,
}
"""Agent name -> ``build(cfg, glimpse_shape, num_targets, num_classes=None)``."""


def train_reinforce(cfg: HardTrainConfig) -> dict[str, float]:
    """Train the agent ``cfg.agent`` with REINFORCE; return the test metrics (also written
    to ``metrics.json`` in the run folder)."""
    cfg = cfg.resolved()
    build_policy = POLICIES[cfg.agent]
    with distributed.session(cfg.setup()) as device, distributed.training_run(cfg) as (cfg, run):
        return _train(cfg, build_policy, device, run)


def _train(cfg, build_policy, device, run: Run) -> dict[str, float]:
    world = distributed.world_size()
    with distributed.local_main_first():  # one process per node generates the datasets
        train_env, evals = build_envs(cfg, device)
    if world > 1:
        train_env.stream.shard(distributed.rank(), world)
    train_env.reset(seed=cfg.seed)
    glimpse_shape = train_env.single_observation_space["glimpse"].shape
    mdp = train_env.config
    policy = build_policy(cfg, glimpse_shape, mdp.num_targets, mdp.num_classes).to(device)
    if cfg.init_from:  # rank 0's weights are broadcast below; a resumed checkpoint wins
        load_weights(policy, cfg.init_from, device)
    # same weights on every rank, own sampling noise per rank, Adam + schedule, resume
    opt, sched, per_epoch, start_epoch, global_step, best = distributed.start_training(
        policy, cfg, run, train_env.stream
    )
    rcfg = ReinforceConfig(baseline_coef=cfg.baseline_coef, entropy_coef=cfg.entropy_coef)
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        policy.train()
        bar = progress(range(per_epoch), total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        running = 0.0
        for it in bar:
            t0 = time.perf_counter()
            ro = collect_rollout(policy, train_env, options=train_first_fixations(cfg, global_step))
            loss, metrics = reinforce_loss(ro, rcfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.allreduce_gradients(policy.parameters())
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            global_step += cfg.batch_size * world
            if distributed.debugging():  # tests: per-step, per-rank weights and batch
                distributed.debug_record(global_step, policy, train_env.indices, **metrics)
            running = (
                0.9 * running + 0.1 * metrics["train/accuracy"]
                if it
                else (metrics["train/accuracy"])
            )
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(acc=f"{running:.3f}", loss=f"{metrics['losses/total']:.3f}")
            if it % cfg.log_every == 0 or it == per_epoch - 1:
                metrics = distributed.mean_metrics(metrics)
                metrics["charts/std"] = policy.std.mean().item()
                metrics["charts/lr"] = opt.param_groups[0]["lr"]
                metrics["charts/images_per_s"] = cfg.batch_size * world / (time.perf_counter() - t0)
                run.log_scalars(metrics, global_step)
        policy.eval()
        val = evaluate_policy(policy, evals["val"], cfg, desc="val")
        run.log_scalars({"eval/accuracy": val["accuracy"], "eval/error": val["error"]}, global_step)
        log_playback(run, policy, evals["val"], cfg.playback, global_step, cfg)
        best = distributed.end_epoch(
            run,
            policy,
            opt,
            sched,
            train_env.stream,
            epoch=epoch + 1,
            global_step=global_step,
            best=best,
            accuracy=val["accuracy"],
        )
        if distributed.is_main():
            print(
                f"epoch {epoch + 1}: val accuracy {val['accuracy']:.4f} (best {best:.4f})",
                flush=True,
            )
    best_model = distributed.best_model_state(run)
    if best_model is not None:
        policy.load_state_dict(best_model)
    policy.eval()
    train_seconds = time.time() - t_start
    protocols = ("single-mean", "single-sampled") + (("mc",) if cfg.mc_samples > 1 else ())
    report = evaluate_protocols(
        policy, {"val": evals["val"], "test": evals["test"]}, cfg, protocols, cfg.eval_seeds
    )
    head = headline_protocol(report)
    test_error = report[head]["test_error"]
    paper = paper_figure(cfg.task, cfg.agent)
    result = {
        "test_accuracy": 1 - test_error,
        "test_error": test_error,
        "headline_protocol": head,
        "protocols": report,
        "selection": "best.pt: highest validation accuracy after an epoch, single-mean, "
        "evaluation seed = the run's seed; headline: the single-trajectory protocol with "
        "the lower mean validation error",
        "val_best_accuracy": best,
        "epochs": cfg.epochs,
        "start_epoch": start_epoch,
        "episodes_seen": global_step,
        "train_seconds_this_session": train_seconds,
        "mc_samples": cfg.mc_samples,
        "world_size": world,
        "machine": machine_description(device),
        "command": command_line(),
        "paper_error": None if paper is None else paper.error_pct / 100,
        "paper_ref": None if paper is None else paper.ref,
    }
    if "test_digit_error" in report[head]:
        result["test_digit_accuracy"] = 1 - report[head]["test_digit_error"]
    run.log_scalars({"eval/test_accuracy": 1 - test_error}, global_step)
    run.write_json("metrics.json", result)
    if distributed.is_main():
        for label, r in report.items():
            print(
                f"{label}: test error {r['test_error']:.2%} ± {r['test_error_std']:.2%} "
                f"(val {r['val_error']:.2%}; {len(r['eval_seeds'])} evaluation seed(s))",
                flush=True,
            )
        ref = "no paper figure" if paper is None else f"paper {paper.error_pct}% ({paper.ref})"
        print(f"test error {test_error:.2%} ({head}, chosen on validation); {ref}", flush=True)
    return result
