"""Training hard-attention agents (RAM, DRAM) with batched REINFORCE: the library side of
``scripts/train_ram.py`` and ``scripts/train_dram.py``. The fixed-location controls
(``glimpse-random``, ``glimpse-grid``; :mod:`agents.fixed`) and ``glimpse-soft``
(:mod:`agents.soft_locations`) train here too, by the classification loss alone
(:class:`FixedLocationMethod`): they have no location to reinforce (``glimpse-soft``'s
locations get the loss's gradient through the differentiable retina), and log no
``losses/{policy,baseline,entropy}`` nor ``charts/*`` of the policy.

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

import math
from typing import Any

import torch

from agents.config import BACKPROP_AGENTS, HardTrainConfig
from agents.environments import build_envs
from agents.evaluation import evaluate_policy, evaluate_protocols, hard_cost, headline_protocol
from agents.playback import log_playback
from agents.policies import POLICIES
from agents.reinforce import (
    ReinforceConfig,
    Rollout,
    classification_loss,
    collect_rollout,
    episode_draws,
    reinforce_loss,
)
from envs import GlimpseVectorEnv
from glimpse import distributed
from glimpse.loop import Budget, Method, Report, Update, apply_gradients, fit
from glimpse.results import paper_figure
from glimpse.training import Run, batches_per_epoch, load_weights

__all__ = [
    "FixedLocationMethod",
    "GlimpseAgentMethod",
    "ReinforceMethod",
    "log_playback",
    "set_std",
    "std_schedule",
    "train_first_fixations",
    "train_reinforce",
]


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


def reinforce_budget(cfg: HardTrainConfig, train_env: GlimpseVectorEnv) -> Budget:
    """``cfg.epochs`` passes over this rank's shard of the training split, one update per
    batch of ``cfg.batch_size`` episodes per rank, a validation after every epoch."""
    world = distributed.world_size()
    per_epoch = batches_per_epoch(
        train_env.stream.shard_size, cfg.batch_size, cfg.max_batches_per_epoch
    )
    mdp = train_env.config
    return Budget(
        total_updates=cfg.epochs * per_epoch,
        eval_every=per_epoch,
        images_per_update=cfg.batch_size * world,
        env_steps_per_update=cfg.batch_size * world * mdp.max_steps,
    )


LOCATION_HEADS: tuple[str, ...] = ("locator", "emission")
"""Names of the modules that emit the next location: RAM's ``locator`` (also inside the
controls' ``body``) and DRAM's ``emission``."""


def parameter_groups(
    policy: torch.nn.Module, lr: float, location_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Adam's parameter groups: one group at ``lr`` when ``location_lr_scale`` is 1 (so
    optimiser states of earlier runs still load), else the location head's parameters
    (:data:`LOCATION_HEADS`) at ``lr * location_lr_scale`` first and the rest at ``lr``.
    Raises ``ValueError`` for a scale other than 1 on a policy without a location head."""
    if location_lr_scale == 1.0:
        return [{"params": list(policy.parameters()), "lr": lr}]
    head, rest = [], []
    for name, p in policy.named_parameters():
        parts = name.split(".")
        (head if len(parts) >= 2 and parts[-2] in LOCATION_HEADS else rest).append(p)
    if not head:
        raise ValueError(
            f"location_lr_scale {location_lr_scale} needs a location head "
            f"({', '.join(LOCATION_HEADS)}); {type(policy).__name__} has none"
        )
    return [{"params": head, "lr": lr * location_lr_scale}, {"params": rest, "lr": lr}]


class GlimpseAgentMethod(Method):
    """What the trainers of glimpse policies (REINFORCE here, PPO-hybrid in
    :mod:`agents.ppo_train`) share: the run's vector envs (:func:`build_envs`; each rank
    plays its shard of the training split), the policy ``cfg.agent`` from
    :data:`agents.policies.POLICIES` (warm-started from ``cfg.init_from``), Adam, and the
    validation, playback, cost and final report (every protocol over the evaluation seeds,
    headline chosen on validation) of the policy. A subclass sets :attr:`budget` and
    :attr:`name` and writes :meth:`update`."""

    def __init__(self, cfg: HardTrainConfig, device: torch.device, run: Run) -> None:
        self.cfg, self.device = cfg, device
        world = distributed.world_size()
        with distributed.local_main_first():  # one process per node generates the datasets
            self.train_env, self.evals = build_envs(cfg, device)
        if world > 1:
            self.train_env.stream.shard(distributed.rank(), world)
        self.train_env.reset(seed=cfg.seed)
        glimpse_shape = self.train_env.single_observation_space["glimpse"].shape
        mdp = self.train_env.config
        policy = POLICIES[cfg.agent](cfg, glimpse_shape, mdp.num_targets, mdp.num_classes)
        self.model = self.policy = policy.to(device)
        if cfg.init_from:  # rank 0's weights are broadcast by fit; a resumed checkpoint wins
            load_weights(self.policy, cfg.init_from, device)
        self.optimizer = torch.optim.Adam(
            parameter_groups(self.policy, cfg.lr, cfg.location_lr_scale),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
        self.stream = self.train_env.stream
        self.task = cfg.task

    def train_scalars(self, last: Update) -> dict[str, float]:
        out = distributed.mean_metrics(last.metrics)
        out["charts/std"] = self.policy.std.mean().item()
        return out

    def validate(self) -> dict[str, float]:
        val = evaluate_policy(self.policy, self.evals["val"], self.cfg, desc="val")
        return {"accuracy": val["accuracy"], "error": val["error"]}

    def log_images(self, run: Run, step: int) -> None:
        log_playback(run, self.policy, self.evals["val"], self.cfg.playback, step, self.cfg)

    def cost(self) -> dict[str, Any]:
        return hard_cost(self.policy, self.evals["test"])

    def report(self) -> Report:
        """Every single-trajectory protocol (and ``mc<M>`` with ``mc_samples > 1``) on val
        and test over ``eval_seeds`` evaluation seeds; the headline chosen on validation."""
        cfg = self.cfg
        protocols = ("single-mean", "single-sampled") + (("mc",) if cfg.mc_samples > 1 else ())
        evals = {"val": self.evals["val"], "test": self.evals["test"]}
        report = evaluate_protocols(self.policy, evals, cfg, protocols, cfg.eval_seeds)
        head = headline_protocol(report)
        paper = paper_figure(cfg.task, self.name)
        details: dict[str, Any] = {"mc_samples": cfg.mc_samples}
        if "test_digit_error" in report[head]:
            details["test_digit_accuracy"] = 1 - report[head]["test_digit_error"]
        return Report(
            test_error=report[head]["test_error"],
            protocol=head,
            protocols=report,
            selection="best.pt: highest validation accuracy at a validation, single-mean, "
            "evaluation seed = the run's seed; headline: the single-trajectory protocol with "
            "the lower mean validation error",
            details=details,
            paper_error=None if paper is None else paper.error_pct / 100,
            paper_ref=None if paper is None else paper.ref,
        )


def std_schedule(cfg: HardTrainConfig, update: int, total: int) -> float:
    """The location policy's σ at ``update`` of ``total`` under ``--std-final``: a cosine
    from ``cfg.std`` (update 0) to ``cfg.std_final`` (the last update)."""
    if cfg.std_final is None:
        return cfg.std
    done = min(1.0, update / max(1, total - 1))
    return cfg.std_final + (cfg.std - cfg.std_final) * 0.5 * (1.0 + math.cos(math.pi * done))


def set_std(policy: torch.nn.Module, std: float) -> None:
    """Set a fixed-σ location policy's σ (its ``log_std`` buffer, saved with the weights;
    found by name, so a wrapped policy works too)."""
    buffers = [b for name, b in policy.named_buffers() if name.rpartition(".")[2] == "log_std"]
    if not buffers:
        raise ValueError(f"{type(policy).__name__} has no fixed log_std buffer to anneal")
    for b in buffers:
        b.fill_(math.log(std))


class ReinforceMethod(GlimpseAgentMethod):
    """RAM / DRAM trained by the hybrid REINFORCE loss (Mnih et al. 2014): classification
    by backpropagation, locations by REINFORCE with a learned baseline
    (:func:`agents.reinforce.reinforce_loss`); one update per batch."""

    def __init__(self, cfg: HardTrainConfig, device: torch.device, run: Run) -> None:
        super().__init__(cfg, device, run)
        self.budget = reinforce_budget(cfg, self.train_env)
        self.name = cfg.agent
        self.rcfg = ReinforceConfig(
            baseline_coef=cfg.baseline_coef,
            entropy_coef=cfg.entropy_coef,
            per_step_loss=cfg.per_step_loss,
        )
        self.updates = 0  # updates done (restored on resume), for the first fixations

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["global_step"]) // self.budget.images_per_update

    def update(self) -> Update:
        step = self.updates * self.budget.images_per_update
        if self.cfg.std_final is not None:
            set_std(self.policy, std_schedule(self.cfg, self.updates, self.budget.total_updates))
        options = train_first_fixations(self.cfg, step)
        ro = collect_rollout(self.policy, self.train_env, options=options)
        loss, metrics = self.loss(ro)
        apply_gradients(loss, self.policy, self.optimizer, self.cfg.grad_clip)
        self.updates += 1
        return Update(metrics, indices=self.train_env.indices)

    def loss(self, ro: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        """The hybrid loss of a batch of episodes (:func:`agents.reinforce.reinforce_loss`)."""
        return reinforce_loss(ro, self.rcfg)


class FixedLocationMethod(ReinforceMethod):
    """The fixed-location controls (:mod:`agents.fixed`): :class:`ReinforceMethod`'s
    budget, first fixations, evaluation and report, with the classification loss alone
    (:func:`agents.reinforce.classification_loss`): the locations are a rule, and no
    gradient reaches the body's location or baseline heads."""

    def loss(self, ro: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        return classification_loss(ro, self.cfg.per_step_loss)

    def train_scalars(self, last: Update) -> dict[str, float]:
        return distributed.mean_metrics(last.metrics)  # no location policy: no charts/std


def train_reinforce(cfg: HardTrainConfig) -> dict[str, Any]:
    """Train the agent ``cfg.agent`` through :func:`glimpse.loop.fit`: with REINFORCE
    (:class:`ReinforceMethod`), or, for the fixed-location controls (``glimpse-random``,
    ``glimpse-grid``) and ``glimpse-soft`` (whose locations learn through the
    differentiable retina), by the classification loss alone (:class:`FixedLocationMethod`);
    return the ``metrics.json`` record (test metrics of the best-on-validation weights)."""
    cfg = cfg.resolved()
    method = FixedLocationMethod if cfg.agent in BACKPROP_AGENTS else ReinforceMethod
    return fit(method, cfg)
