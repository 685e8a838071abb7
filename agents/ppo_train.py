"""Training hard-attention agents with PPO: the library side of ``scripts/train_ppo.py``.

Two algorithms (``--algo``):

- ``ppo-hybrid``: the project's batched PPO (:mod:`agents.ppo`) driving the RAM/DRAM policy
  through :class:`envs.GlimpseVectorEnv`; classification by backpropagation, locations by
  PPO's clipped objective with GAE and the policy's value head.
- ``sb3-recurrent-ppo``: sb3-contrib's ``RecurrentPPO`` with an LSTM policy over the
  glimpse features extractor (:mod:`agents.sb3`) on the SB3 face of the same env; the
  class label is part of the (flat, multidiscrete) action and is learned from the env's
  reward only.

Same conventions as :func:`agents.train.train_reinforce`: run folder ``runs/<run_name>/``
with ``config.json``, TensorBoard events, atomic ``last.pt``/``best.pt`` (``--resume``
continues from ``last.pt``) and ``metrics.json``; evaluation through
:func:`glimpse.evaluation.evaluate` on the validation split (model selection) and the
test split (final).

TensorBoard tags; **the global step is the number of environment steps (glimpses taken,
summed over all episodes)** -- not episodes as in the REINFORCE trainer (there
``env steps = episodes * num_glimpses * num_targets``; :mod:`glimpse.experiments.curves` converts):

- ``losses/{total,classification,policy,value,entropy}`` (ppo-hybrid; sb3 logs
  ``losses/{total,policy,value,entropy}``), ``train/{accuracy,reward}``,
  ``charts/{clip_fraction,approx_kl,lr,env_steps_per_s}`` (ppo-hybrid also
  ``charts/{std,value,advantage_abs,optimizer_steps}``, sb3 ``charts/explained_variance``);
- ``eval/{accuracy,error}`` (validation) and ``charts/elapsed_s`` (wall seconds of
  training so far, evaluation included, summed over resumed sessions) at every evaluation;
- ``eval/trajectories/...``: glimpse playback of the first ``playback`` validation images
  (:func:`glimpse.viz.log_trajectories`);
- ``eval/test_accuracy`` at the end; ``hparams``: the config as a text table.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from agents.config import ALGOS, PPOTrainConfig
from agents.ppo import collect_episodes, ppo_update
from agents.sb3 import train_sb3
from agents.train import GlimpseAgentMethod
from glimpse import distributed
from glimpse.loop import Budget, Update, fit
from glimpse.training import Run

__all__ = ["ALGOS", "PPOTrainConfig", "train_ppo"]


class PPOHybridMethod(GlimpseAgentMethod):
    """PPO-hybrid for :func:`glimpse.loop.fit`: one update is one rollout of
    ``batch_size`` episodes per rank followed by :func:`agents.ppo.ppo_update` (several
    passes of minibatch steps, gradients averaged over ranks); the schedule steps once per
    rollout; a validation every ``eval_every_steps`` env steps. TensorBoard's global step
    counts env steps."""

    name = "ppo-hybrid"

    def __init__(self, cfg: PPOTrainConfig, device: torch.device, run: Run) -> None:
        super().__init__(cfg, device, run)
        world = distributed.world_size()
        per_rollout = cfg.batch_size * cfg.episode_steps() * world
        total_steps, eval_every = cfg.budget(len(self.train_env.source))
        self.budget = Budget(
            total_updates=math.ceil(total_steps / per_rollout),
            eval_every=max(1, eval_every // per_rollout),
            images_per_update=cfg.batch_size * world,
            env_steps_per_update=per_rollout,
            step_unit="env_steps",
        )
        self.pcfg = cfg.ppo()

    def update(self) -> Update:
        batch = collect_episodes(self.policy, self.train_env)
        metrics = ppo_update(self.policy, self.optimizer, batch, self.pcfg)
        return Update(metrics, indices=self.train_env.indices)


def train_ppo(cfg: PPOTrainConfig) -> dict[str, Any]:
    """Train with ``cfg.algo``; return the ``metrics.json`` record (test metrics of the
    best-on-validation weights). PPO-hybrid trains through :func:`glimpse.loop.fit` (so
    also under ``torchrun``); sb3-recurrent-ppo through SB3's ``learn``
    (:func:`agents.sb3.train_sb3`), one process, writing the same schema."""
    cfg = cfg.resolved()
    if cfg.algo == "ppo-hybrid":
        return fit(PPOHybridMethod, cfg)
    return train_sb3(cfg)
