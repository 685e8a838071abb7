"""Training configurations of the hard-attention trainers: :class:`HardTrainConfig`
(REINFORCE on RAM/DRAM, :mod:`agents.train`) and :class:`PPOTrainConfig` (PPO-hybrid and
sb3-contrib's RecurrentPPO; :mod:`agents.ppo_train`, :mod:`agents.sb3`); the task
defaults they inherit come from the task table (:mod:`glimpse.tasks`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from agents.ppo import PPOConfig, PPOHyperparameters
from envs import MDPConfig
from glimpse.tasks import get_task, tasks_of
from glimpse.training import Rule, RunConfig, batches_per_epoch, check_config

__all__ = [
    "ALGOS",
    "BACKPROP_AGENTS",
    "FIXED_AGENTS",
    "RAM_AGENTS",
    "TASK_IDS",
    "HardTrainConfig",
    "PPOTrainConfig",
    "task_defaults",
]

FIXED_AGENTS: tuple[str, ...] = ("glimpse-random", "glimpse-grid")
"""Agents whose locations are not learnt (:mod:`agents.fixed`): classification loss only."""
BACKPROP_AGENTS: tuple[str, ...] = (*FIXED_AGENTS, "glimpse-soft")
"""Agents trained by the classification loss alone: the fixed-location controls and
``glimpse-soft`` (:mod:`agents.soft_locations`), whose locations learn through the
differentiable retina."""
RAM_AGENTS: tuple[str, ...] = ("ram", "ram-conv", *BACKPROP_AGENTS)
"""Agents built on the RAM network: they classify one object."""

TASK_IDS: dict[str, str] = {t.name: t.env_id for t in tasks_of("paper", "proxy")}
"""Task name -> registered task whose defaults (``T``, ``g``, ``k``) a run inherits: the
one-location tasks of :data:`glimpse.tasks.TASKS`."""


def task_defaults(task: str) -> dict[str, Any]:
    """The registered defaults of task ``task`` (:data:`TASK_IDS`; its
    :meth:`glimpse.tasks.Task.env_kwargs`). Raises ``ValueError`` for another name."""
    if task not in TASK_IDS:
        raise ValueError(f"unknown task {task!r} for RAM/DRAM; valid: {', '.join(TASK_IDS)}")
    return get_task(task).env_kwargs()


@dataclass
class HardTrainConfig(RunConfig):
    """Training a hard-attention agent with REINFORCE (RAM: Mnih et al. 2014)."""

    task: Literal[
        "mnist",
        "translated60",
        "cluttered60",
        "cluttered100",
        "multimnist",
        "dram-pairs",
        "dram-addition",
        "stn-cluttered60",
        "twodigit100",
    ] = "mnist"
    """Dataset / task: 28x28 MNIST, 60x60 translated, 60x60 or 100x100 cluttered, MultiMNIST,
    the DRAM paper's MNIST pairs (55 classes) or addition (19 classes) task, the STN paper's
    cluttered 60x60, or twodigit100 (two cluttered digits on 100x100 as one of 100 classes:
    the FCAN proxy)."""
    agent: Literal["ram", "dram", "ram-conv", "glimpse-random", "glimpse-grid", "glimpse-soft"] = (
        "ram"
    )
    """The agent: RAM (Mnih et al. 2014), DRAM (Ba et al. 2015), or a control of issue 17:
    ram-conv (RAM with a conv glimpse network), glimpse-random / glimpse-grid (RAM's network
    with uniformly random locations / a fixed serpentine scan, classifier trained by
    backpropagation only; agents/fixed.py), glimpse-soft (RAM's network with deterministic
    locations learnt by backpropagation through the differentiable retina;
    agents/soft_locations.py)."""
    glimpse_net: Literal["mlp", "conv"] | None = None
    """RAM's glimpse network: the paper's MLP or a conv stack per scale (default: conv for
    ram-conv, mlp otherwise; conv also works with glimpse-random / glimpse-grid /
    glimpse-soft)."""
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
    std_final: float | None = None
    """Anneal the location policy's standard deviation from ``std`` to this over the run,
    on a cosine in the updates (as the learning rate), so that late training samples close
    to the mean the ``single-mean`` readout uses; a checkpoint keeps the value of its
    update (sampled evaluation uses it). Unset: ``std`` throughout. REINFORCE only."""
    core: Literal["rnn", "lstm"] = "rnn"
    """Core network: the paper's rectifier RNN or an LSTM (DRAM always uses LSTMs)."""
    hidden: int = 256
    """Core state size."""
    detach_location: bool = True
    """Keep REINFORCE and classification gradients apart: REINFORCE trains only the
    location pathway (RAM: the location head; DRAM: context network, upper LSTM, emission),
    classification the rest (--no-detach-location: the paper's joint gradient, which
    learns much slower here)."""
    location_gradient: Literal["full", "head"] = "full"
    """glimpse-soft only: where the classification loss's gradient with respect to a
    location goes. ``full``: through the location head into the core and, through it, the
    earlier glimpses (end to end); ``head``: into the location head's weights only (the
    core state is detached at the head's input, as RAM's ``--detach-location`` does for
    REINFORCE), so the core and glimpse network learn from what they see, not from where."""
    lr: float = 1e-3
    """Adam learning rate."""
    location_lr_scale: float = 1.0
    """Learning rate of the location head (RAM's ``locator``, DRAM's ``emission``) as a
    multiple of ``lr`` (1: one rate for all; PPO-hybrid and REINFORCE, not sb3). A slower
    location head is the spatial transformer's practice for its localisation network
    (Jaderberg et al. 2015); for ``glimpse-soft`` on cluttered 60x60 it did not cure the
    stall that ``location_gradient="head"`` does (docs/RESULTS.md, issue 17)."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule over all training batches."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    epochs: int = 70
    """Passes over the training split (70: the 28x28 default recipe, the largest budget
    expected to fit 30 minutes on a 2-core CPU; docs/RESULTS.md)."""
    batch_size: int = 128
    """Episodes per gradient step and process (the vector env's ``num_envs``); under
    torchrun the global batch is this times the number of processes."""
    entropy_coef: float = 0.0
    """Weight of the location-entropy bonus."""
    baseline_coef: float = 1.0
    """Weight of the baseline's regression loss."""
    per_step_loss: bool = False
    """Train the classifier's readout after every glimpse (cross-entropy averaged over the
    steps), not only after the last; the reward is unchanged. The accuracy-against-glimpses
    curves (issue 17) read the classifier after each glimpse either way."""
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
        "std_final": (">", 0),
        "hidden": (">=", 1),
        "lr": (">=", 0),
        "location_lr_scale": (">=", 0),
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
    RESUMABLE: ClassVar[tuple[str, ...]] = ("epochs", "patience")
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
        if out.agent in RAM_AGENTS and get_task(out.task).num_targets > 1:
            raise ValueError(
                f"{out.agent} (the RAM network) classifies one object; use --agent dram for "
                f"{out.task}"
            )
        net = out.glimpse_net
        if out.agent == "dram" and net is not None:
            raise ValueError("--glimpse-net is a RAM option; DRAM has its own glimpse network")
        if out.agent == "ram" and net == "conv":
            raise ValueError("RAM with --glimpse-net conv is --agent ram-conv")
        if out.agent == "ram-conv" and net == "mlp":
            raise ValueError("--agent ram-conv has the conv glimpse network; --agent ram the MLP")
        if out.location_gradient != "full" and out.agent != "glimpse-soft":
            raise ValueError(
                f"--location-gradient {out.location_gradient} is a glimpse-soft option "
                f"(differentiable locations); --agent {out.agent} has none"
            )
        if out.std_final is not None and (out.learn_std or out.agent in BACKPROP_AGENTS):
            why = "a learned σ" if out.learn_std else f"--agent {out.agent}'s fixed locations"
            raise ValueError(
                f"--std-final {out.std_final} anneals the fixed σ of a sampled location "
                f"policy; it cannot be combined with {why}"
            )
        if out.init_from and not Path(out.init_from).exists():  # fail before building data
            raise FileNotFoundError(
                f"--init-from {out.init_from}: no such checkpoint or run folder"
            )
        return out

    def glimpse_network(self) -> str:
        """The RAM glimpse network this run uses: ``glimpse_net``, or the agent's own
        (``"conv"`` for ram-conv, ``"mlp"`` otherwise)."""
        if self.glimpse_net is not None:
            return self.glimpse_net
        return "conv" if self.agent == "ram-conv" else "mlp"

    def task_num_classes(self) -> int:
        """Classes of the task's dataset as the task table has them (:func:`build_envs`
        takes them from the dataset itself)."""
        return get_task(self.task).num_classes

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
            differentiable=self.agent == "glimpse-soft",
        )


ALGOS = ("ppo-hybrid", "sb3-recurrent-ppo")


@dataclass
class PPOTrainConfig(HardTrainConfig, PPOHyperparameters):
    """Training a hard-attention agent with PPO (Schulman et al. 2017): the project's
    PPO-hybrid or sb3-contrib's RecurrentPPO."""

    algo: Literal["ppo-hybrid", "sb3-recurrent-ppo"] = "ppo-hybrid"
    """ppo-hybrid: own batched PPO on the RAM/DRAM policy (classification by backprop);
    sb3-recurrent-ppo: sb3-contrib RecurrentPPO with an LSTM policy (label by reward)."""
    epochs: int = 5
    """Budget in passes over the training split (one episode per image); ignored when
    total_env_steps is set."""
    init_location: Literal["center", "random"] = "center"
    """First fixation (as before issue 16 changed RAM's default to random: the PPO
    comparisons in docs/RESULTS.md were measured from the centre)."""
    threads: int = 0
    """PyTorch CPU threads (0: PyTorch's default)."""
    total_env_steps: int = 0
    """Budget in environment steps (glimpses); 0: epochs * training images * glimpses per
    episode."""
    eval_every_steps: int = 0
    """Evaluate on the validation split every this many env steps (0: once per epoch's
    worth of env steps)."""
    sb3_n_steps: int = 0
    """sb3 only: steps per env per rollout (0: one episode length, num_targets * T)."""
    sb3_grid: int = 9
    """sb3 only: the location action is a cell of a grid_size x grid_size grid."""
    sb3_ent_coef: float = 0.01
    """sb3 only: entropy bonus of the (location cell, label) action distribution."""

    RULES: ClassVar[dict[str, Rule]] = {
        "total_env_steps": (">=", 0),
        "eval_every_steps": (">=", 0),
        "sb3_n_steps": (">=", 0),
        "sb3_grid": (">=", 2),
        "sb3_ent_coef": (">=", 0),
    }
    RESUMABLE: ClassVar[tuple[str, ...]] = ("epochs", "total_env_steps", "patience")
    """``--resume`` with a larger budget extends the run."""

    def resolved(self) -> PPOTrainConfig:
        """A copy with the task's defaults filled in, the run name chosen and checked."""
        check_config(self)
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        name = self.run_name or f"{self.algo}-{self.task}-s{self.seed}-{int(time.time())}"
        out = HardTrainConfig.resolved(replace(self, run_name=name))
        if out.total_env_steps < 0 or out.eval_every_steps < 0 or out.sb3_n_steps < 0:
            raise ValueError(
                "total_env_steps, eval_every_steps and sb3_n_steps must be >= 0, got "
                f"{out.total_env_steps}, {out.eval_every_steps}, {out.sb3_n_steps}"
            )
        if out.minibatches > out.batch_size:
            raise ValueError(
                f"minibatches ({out.minibatches}) must not exceed batch_size ({out.batch_size})"
            )
        if out.std_final is not None:
            raise ValueError(
                f"--std-final {out.std_final} is a REINFORCE option (scripts/train_ram.py); "
                "the PPO trainers keep σ fixed or learn it (--learn-std)"
            )
        if out.agent in BACKPROP_AGENTS:
            what = "fixed" if out.agent in FIXED_AGENTS else "deterministic, backpropagated"
            raise ValueError(
                f"--agent {out.agent} has {what} locations: no location policy for PPO to "
                "learn (train it with scripts/train_ram.py)"
            )
        if out.algo == "sb3-recurrent-ppo" and out.location_lr_scale != 1.0:
            raise ValueError(
                f"--location-lr-scale {out.location_lr_scale}: sb3-recurrent-ppo has one "
                "learning rate for its whole policy; expected 1"
            )
        if out.algo == "sb3-recurrent-ppo" and out.precision != "fp32":
            raise ValueError(
                "sb3-recurrent-ppo trains with SB3's own learn() in fp32; --precision "
                f"{out.precision} applies to the project's trainers"
            )
        if out.algo == "sb3-recurrent-ppo":
            if out.agent != "ram":
                raise ValueError(
                    f"--agent {out.agent} has no effect with sb3-recurrent-ppo (its policy is "
                    "the LSTM over agents.sb3.GlimpseExtractor); leave --agent ram"
                )
            if out.mc_samples != 1:
                raise ValueError(
                    "sb3-recurrent-ppo evaluates deterministically; got "
                    f"mc_samples={out.mc_samples}"
                )
        if out.per_step_loss:
            raise ValueError(
                "--per-step-loss is a REINFORCE / backprop option (scripts/train_ram.py); "
                "PPO trains the final classification only"
            )
        out.ppo()  # validates the PPO fields
        return out

    def ppo(self) -> PPOConfig:
        """The PPO-hybrid update's hyperparameters."""
        own = {f.name: getattr(self, f.name) for f in fields(PPOHyperparameters)}
        return PPOConfig(
            **own,
            value_coef=self.baseline_coef,
            entropy_coef=self.entropy_coef,
            grad_clip=self.grad_clip,
        )

    def episode_steps(self) -> int:
        """Env steps per episode: ``num_targets * T`` (the task's targets, :mod:`glimpse.tasks`)."""
        return self.num_glimpses * get_task(self.task).num_targets

    def budget(self, train_images: int) -> tuple[int, int]:
        """``(total env steps, env steps between evaluations)`` of this run."""
        per_epoch = (
            batches_per_epoch(train_images, self.batch_size, self.max_batches_per_epoch)
            * self.batch_size
            * self.episode_steps()
        )
        total = self.total_env_steps or self.epochs * per_epoch
        return total, self.eval_every_steps or min(per_epoch, total)
