"""Training configurations of the hard-attention trainers that build on
:class:`agents.train.HardTrainConfig`: :class:`PPOTrainConfig` (PPO-hybrid and sb3-contrib's
RecurrentPPO; :mod:`agents.ppo_train`, :mod:`agents.sb3`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from agents.ppo import PPOConfig
from agents.train import HardTrainConfig
from glimpse.tasks import get_task
from glimpse.training import Rule, batches_per_epoch, check_config

__all__ = ["ALGOS", "PPOTrainConfig"]

ALGOS = ("ppo-hybrid", "sb3-recurrent-ppo")


@dataclass
class PPOTrainConfig(HardTrainConfig):
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
    clip_range: float = 0.2
    """PPO's clip range epsilon for the probability ratio."""
    gamma: float = 1.0
    """Discount factor (1: undiscounted, the episode return is the classification reward)."""
    gae_lambda: float = 0.95
    """GAE lambda (1: Monte-Carlo returns)."""
    update_epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches per pass (ppo-hybrid: of whole episodes; sb3: of the rollout's steps)."""
    normalize_advantages: bool = True
    """Standardise advantages per minibatch."""
    target_kl: float = 0.0
    """Stop a rollout's update early once the approximate KL exceeds this (0: never)."""
    sb3_n_steps: int = 0
    """sb3 only: steps per env per rollout (0: one episode length, num_targets * T)."""
    sb3_grid: int = 9
    """sb3 only: the location action is a cell of a grid_size x grid_size grid."""
    sb3_ent_coef: float = 0.01
    """sb3 only: entropy bonus of the (location cell, label) action distribution."""

    RULES: ClassVar[dict[str, Rule]] = {
        "total_env_steps": (">=", 0),
        "eval_every_steps": (">=", 0),
        "clip_range": (">", 0),
        "gamma": ("[]", 0, 1),
        "gae_lambda": ("[]", 0, 1),
        "update_epochs": (">=", 1),
        "minibatches": (">=", 1),
        "target_kl": (">=", 0),
        "sb3_n_steps": (">=", 0),
        "sb3_grid": (">=", 2),
        "sb3_ent_coef": (">=", 0),
    }
    RESUMABLE: ClassVar[tuple[str, ...]] = ("epochs", "total_env_steps")
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
        out.ppo()  # validates the PPO fields
        return out

    def ppo(self) -> PPOConfig:
        """The PPO-hybrid update's hyperparameters."""
        return PPOConfig(
            clip_range=self.clip_range,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            update_epochs=self.update_epochs,
            minibatches=self.minibatches,
            value_coef=self.baseline_coef,
            entropy_coef=self.entropy_coef,
            normalize_advantages=self.normalize_advantages,
            target_kl=self.target_kl,
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
