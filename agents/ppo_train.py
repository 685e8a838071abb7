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
import time
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch

from agents.ppo import PPOConfig, collect_episodes, ppo_update
from agents.train import POLICIES, HardTrainConfig, build_envs, evaluate_policy, log_playback
from glimpse.training import (
    Rule,
    Run,
    batches_per_epoch,
    check_config,
    checkpoint_state,
    lr_scheduler,
    progress,
    restore_checkpoint_state,
)

__all__ = ["ALGOS", "PPOTrainConfig", "train_ppo"]

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
        """Env steps per episode: ``num_targets * T``."""
        return self.num_glimpses * (2 if self.task == "multimnist" else 1)

    def budget(self, train_images: int) -> tuple[int, int]:
        """``(total env steps, env steps between evaluations)`` of this run."""
        per_epoch = (
            batches_per_epoch(train_images, self.batch_size, self.max_batches_per_epoch)
            * self.batch_size
            * self.episode_steps()
        )
        total = self.total_env_steps or self.epochs * per_epoch
        return total, self.eval_every_steps or min(per_epoch, total)


def train_ppo(cfg: PPOTrainConfig) -> dict[str, float]:
    """Train with ``cfg.algo``; return the test metrics (also in ``metrics.json``)."""
    cfg = cfg.resolved()
    device = cfg.setup()
    run = Run(cfg.run_name, cfg, cfg.runs_root, resume=cfg.resume)
    try:
        if cfg.algo == "ppo-hybrid":
            return _train_hybrid(cfg, device, run)
        from agents.sb3 import train_sb3

        return train_sb3(cfg, device, run)
    finally:
        run.close()


def finish(run: Run, result: dict[str, float], test: dict[str, float], step: int) -> None:
    """Log the test accuracy, write ``metrics.json`` and print the summary line."""
    if "digit_accuracy" in test:
        result["test_digit_accuracy"] = test["digit_accuracy"]
    run.log_scalars({"eval/test_accuracy": test["accuracy"]}, step)
    run.write_json("metrics.json", result)
    print(f"test accuracy {test['accuracy']:.4f} (error {test['error']:.2%})", flush=True)


def _train_hybrid(cfg: PPOTrainConfig, device: torch.device, run: Run) -> dict[str, float]:
    train_env, evals = build_envs(cfg, device)
    train_env.reset(seed=cfg.seed)
    glimpse_shape = train_env.single_observation_space["glimpse"].shape
    policy = POLICIES[cfg.agent](cfg, glimpse_shape, train_env.config.num_targets).to(device)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_rollout = cfg.batch_size * cfg.episode_steps()
    total_steps, eval_every = cfg.budget(len(train_env.source))
    rollouts = math.ceil(total_steps / per_rollout)
    eval_rollouts = max(1, eval_every // per_rollout)
    sched = lr_scheduler(opt, cfg.lr_schedule, rollouts)
    pcfg = cfg.ppo()
    done, global_step, best, elapsed0 = 0, 0, -1.0, 0.0
    state = run.resume_state(device)
    if state is not None:
        restore_checkpoint_state(state, policy, opt, sched)
        done, global_step, best = state["rollouts"], state["global_step"], state["best"]
        elapsed0 = state["elapsed"]
        train_env.stream.load_state_dict(state["stream"])
    else:
        run.log_hparams()
    t_start = time.time()
    bar = progress(range(done, rollouts), total=rollouts - done, desc="ppo-hybrid")
    running = None
    for it in bar:
        t0 = time.perf_counter()
        policy.train()
        batch = collect_episodes(policy, train_env)
        metrics = ppo_update(policy, opt, batch, pcfg)
        sched.step()
        global_step += per_rollout
        acc = metrics["train/accuracy"]
        running = acc if running is None else 0.9 * running + 0.1 * acc
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(acc=f"{running:.3f}", best_val=f"{max(best, 0):.3f}")
        if it % cfg.log_every == 0 or it == rollouts - 1:
            metrics["charts/std"] = policy.std.mean().item()
            metrics["charts/lr"] = opt.param_groups[0]["lr"]
            metrics["charts/env_steps_per_s"] = per_rollout / (time.perf_counter() - t0)
            run.log_scalars(metrics, global_step)
        if (it + 1) % eval_rollouts and it != rollouts - 1:
            continue
        policy.eval()
        val = evaluate_policy(policy, evals["val"], cfg, desc="val")
        elapsed = elapsed0 + time.time() - t_start
        run.log_scalars(
            {
                "eval/accuracy": val["accuracy"],
                "eval/error": val["error"],
                "charts/elapsed_s": elapsed,
            },
            global_step,
        )
        log_playback(run, policy, evals["val"], cfg.playback, global_step, cfg)
        if run.enabled:
            run.writer.flush()
        improved = val["accuracy"] > best
        best = max(best, val["accuracy"])
        ckpt = checkpoint_state(
            policy,
            opt,
            sched,
            rollouts=it + 1,
            global_step=global_step,
            best=best,
            elapsed=elapsed,
            stream=train_env.stream.state_dict(),
        )
        if improved:
            run.save_checkpoint(ckpt, "best")
        run.save_checkpoint(ckpt, "last")
        print(
            f"env step {global_step}: val accuracy {val['accuracy']:.4f} (best {best:.4f}), "
            f"{elapsed:.0f} s",
            flush=True,
        )
    best_state = run.load_checkpoint("best", device)
    if best_state is not None:
        policy.load_state_dict(best_state["model"])
    policy.eval()
    test = evaluate_policy(policy, evals["test"], cfg, desc="test")
    result = {
        "test_accuracy": test["accuracy"],
        "test_error": test["error"],
        "val_best_accuracy": best,
        "env_steps": global_step,
        "episodes_seen": global_step // cfg.episode_steps(),
        "train_seconds_this_session": time.time() - t_start,
        "mc_samples": cfg.mc_samples,
    }
    finish(run, result, test, global_step)
    return result
