"""Batched PPO-hybrid for glimpse policies: classification by backpropagation, locations by
PPO's clipped objective (Schulman et al. 2017, *Proximal Policy Optimization Algorithms*)
with generalised advantage estimation (Schulman et al. 2016, *High-Dimensional Continuous
Control Using Generalized Advantage Estimation*).

The same hybrid idea as :mod:`agents.reinforce` (Mnih et al. 2014), with PPO in place of
REINFORCE for the location policy:

- **Rollout.** :func:`collect_episodes` plays ``venv.num_envs`` complete episodes (every
  episode starts on ``reset`` and lasts exactly ``S = num_targets * T`` steps) under
  ``no_grad`` and stores each step's observation, chosen location, its log-probability and
  the value.
- **Location decisions.** The location chosen at step ``t`` is used for the glimpse of
  step ``t + 1``; its reward is the reward of step ``t + 1`` (the classification pays on
  the step that reads the label). So the decisions are ``t = 0..S-2`` with rewards
  ``r_{t+1}``, values ``V_t`` and a terminal state after ``t = S-2``
  (:func:`location_advantages`); the final step's location is never used and gets no
  gradient, as in REINFORCE. With ``gamma = lambda = 1`` the advantage is REINFORCE's
  ``G_{t+1} - b_t``.
- **Update.** Several epochs over the rollout, each split into minibatches of *whole
  episodes*. Each minibatch replays its episodes from the policy's initial state through
  the stored observations (:func:`replay`), so the recurrent states come from the current
  weights, never stale stored ones; the loss (:func:`ppo_hybrid_loss`) is cross-entropy of
  the classifying steps' logits + the clipped surrogate (:func:`ppo_clip_loss`) on the
  GAE advantages (:func:`compute_gae`) + the value regression onto the GAE returns
  - an optional entropy bonus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from agents.policy import GlimpsePolicy
from agents.reinforce import check_rollout_env
from envs import GlimpseVectorEnv
from glimpse import distributed
from glimpse.loop import apply_gradients

__all__ = [
    "EpisodeBatch",
    "PPOConfig",
    "PPOHyperparameters",
    "collect_episodes",
    "compute_gae",
    "location_advantages",
    "ppo_clip_loss",
    "ppo_hybrid_loss",
    "ppo_update",
    "replay",
]


@dataclass
class PPOHyperparameters:
    """PPO's own hyperparameters (Schulman et al. 2017), declared once: part of
    :class:`PPOConfig` and of the trainer's command line (:class:`agents.config.PPOTrainConfig`)."""

    clip_range: float = 0.2
    """PPO's ``epsilon``: the probability ratio is clipped to ``[1 - eps, 1 + eps]``."""
    gamma: float = 1.0
    """Discount of the location rewards (1: undiscounted, the episode return is the
    classification reward, as REINFORCE here)."""
    gae_lambda: float = 0.95
    """GAE's ``lambda`` (1: Monte-Carlo returns minus the value; 0: one-step TD)."""
    update_epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches per pass (PPO-hybrid: of whole episodes; SB3: of the rollout's steps)."""
    normalize_advantages: bool = True
    """Standardise the advantages of each minibatch."""
    target_kl: float = 0.0
    """Stop the update early once an epoch's mean approximate KL exceeds this (0: never)."""

    RULES: ClassVar[dict[str, tuple]] = {
        "clip_range": ("()", 0, 1),
        "gamma": ("[]", 0, 1),
        "gae_lambda": ("[]", 0, 1),
        "update_epochs": (">=", 1),
        "minibatches": (">=", 1),
        "target_kl": (">=", 0),
    }
    """Bounds of the numeric fields (:func:`glimpse.training.check_config`)."""


@dataclass
class PPOConfig(PPOHyperparameters):
    """Hyperparameters of one PPO-hybrid update: PPO's own plus the loss weights and
    clipping."""

    policy_coef: float = 1.0
    """Weight of the clipped surrogate."""
    value_coef: float = 1.0
    """Weight of the value regression."""
    entropy_coef: float = 0.0
    """Weight of the location-entropy bonus."""
    grad_clip: float = 10.0
    """Clip the global gradient norm to this (0 disables)."""

    def __post_init__(self) -> None:
        if not 0 < self.clip_range < 1:
            raise ValueError(f"clip_range must be in (0, 1), got {self.clip_range!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("update_epochs", "minibatches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        for name in ("target_kl", "grad_clip", "value_coef", "entropy_coef", "policy_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass
class EpisodeBatch:
    """Complete episodes of a rollout, time-major (``S`` steps, ``B`` episodes)."""

    obs: dict[str, Tensor]
    """Observation of each step, ``(S, B, ...)`` per key (what the policy integrated)."""
    locations: Tensor
    """``(S, B, 2)`` location chosen at each step (sent to the env)."""
    log_probs: Tensor
    """``(S, B)`` log-probability of ``locations`` under the rollout policy."""
    values: Tensor
    """``(S, B)`` the rollout policy's value ``V_t``."""
    rewards: Tensor
    """``(S, B)`` reward of each step."""
    labels: Tensor
    """``(B, L)`` true labels (from the env's ``info``)."""
    logits: Tensor
    """``(L, B, C)`` rollout logits of the classifying steps (for train accuracy)."""
    num_glimpses: int
    """``T``: the classifying steps are ``t`` with ``(t + 1) % T == 0``."""

    @property
    def num_episodes(self) -> int:
        return self.rewards.shape[1]

    def select(self, index: Tensor) -> EpisodeBatch:
        """The episodes ``index`` (a long tensor over ``B``)."""
        return EpisodeBatch(
            {k: v[:, index] for k, v in self.obs.items()},
            self.locations[:, index],
            self.log_probs[:, index],
            self.values[:, index],
            self.rewards[:, index],
            self.labels[index],
            self.logits[:, index],
            self.num_glimpses,
        )


@torch.no_grad()
def collect_episodes(
    policy: GlimpsePolicy, venv: GlimpseVectorEnv, generator: torch.Generator | None = None
) -> EpisodeBatch:
    """Play ``venv.num_envs`` complete episodes with sampled locations (no gradients)."""
    check_rollout_env(venv, "PPO")
    cfg = venv.config
    obs, info = venv.reset()
    labels = info["label"].reshape(venv.num_envs, -1)
    state = policy.initial_state(obs)
    keys = list(obs)
    stored: dict[str, list[Tensor]] = {k: [] for k in keys}
    locs, logps, values, rewards, logits = [], [], [], [], []
    for t in range(cfg.max_steps):
        for k in keys:
            stored[k].append(obs[k])
        out = policy.act(obs, state, False, generator)
        action = {"location": out.location, "label": out.logits.argmax(1)}
        obs, reward, terminated, _, info = venv.step(action)
        state = out.state
        locs.append(out.location)
        logps.append(out.log_prob)
        values.append(out.value)
        rewards.append(reward.float())
        if (t + 1) % cfg.num_glimpses == 0:
            logits.append(out.logits)
    if not bool(terminated.all()):
        raise RuntimeError("episodes did not end after num_targets * T steps")
    return EpisodeBatch(
        {k: torch.stack(v) for k, v in stored.items()},
        torch.stack(locs),
        torch.stack(logps),
        torch.stack(values),
        torch.stack(rewards),
        labels,
        torch.stack(logits),
        cfg.num_glimpses,
    )


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    last_value: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), time-major.

    Args:
        rewards: ``(T, B)`` reward ``r_t`` of the action at step ``t``.
        values: ``(T, B)`` ``V(s_t)``.
        dones: ``(T, B)`` 1 where the episode ends after step ``t`` (no bootstrap).
        last_value: ``(B,)`` ``V(s_T)`` for bootstrapping after the last step.
        gamma, gae_lambda: discount and GAE's ``lambda``.

    Returns ``(advantages, returns)``, both ``(T, B)``, with
    ``delta_t = r_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t)``,
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` and ``returns = A + V``.
    """
    if rewards.shape != values.shape or rewards.shape != dones.shape or rewards.ndim != 2:
        raise ValueError(
            "rewards, values and dones must share a (T, B) shape, got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(dones.shape)}"
        )
    if last_value.shape != rewards.shape[1:]:
        raise ValueError(
            f"last_value must have shape ({rewards.shape[1]},), got {tuple(last_value.shape)}"
        )
    rewards, values, last_value = rewards.detach(), values.detach(), last_value.detach()
    not_done = 1.0 - dones.to(values.dtype)
    adv = torch.zeros_like(values)
    running = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        next_value = last_value if t == rewards.shape[0] - 1 else values[t + 1]
        delta = rewards[t] + gamma * not_done[t] * next_value - values[t]
        running = delta + gamma * gae_lambda * not_done[t] * running
        adv[t] = running
    return adv, adv + values


def location_advantages(
    batch: EpisodeBatch, gamma: float, gae_lambda: float
) -> tuple[Tensor, Tensor]:
    """GAE advantages and returns of the ``S - 1`` used location decisions, ``(S - 1, B)``:
    decision ``t`` earns ``r_{t+1}``; the episode ends after decision ``S - 2``."""
    steps = batch.rewards.shape[0]
    if steps < 2:
        empty = batch.values[:0]
        return empty, empty
    rewards = batch.rewards[1:]
    values = batch.values[:-1]
    dones = torch.zeros_like(rewards)
    dones[-1] = 1.0
    last = torch.zeros_like(values[0])
    return compute_gae(rewards, values, dones, last, gamma, gae_lambda)


def ppo_clip_loss(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, clip_range: float
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate loss (Schulman et al. 2017, eq. 7), to be minimised:

    ``-mean(min(rho * A, clip(rho, 1 - eps, 1 + eps) * A))`` with
    ``rho = exp(log_probs - old_log_probs)``.

    Also returns ``clip_fraction`` (share of ratios outside the clip range) and
    ``approx_kl`` (the ``(rho - 1) - log rho`` estimator of ``KL(old || new)``).
    """
    if log_probs.shape != old_log_probs.shape or log_probs.shape != advantages.shape:
        raise ValueError(
            "log_probs, old_log_probs and advantages must have the same shape, got "
            f"{tuple(log_probs.shape)}, {tuple(old_log_probs.shape)}, {tuple(advantages.shape)}"
        )
    if not 0 < clip_range < 1:
        raise ValueError(f"clip_range must be in (0, 1), got {clip_range!r}")
    log_ratio = log_probs - old_log_probs.detach()
    ratio = log_ratio.exp()
    adv = advantages.detach()
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_range, 1 + clip_range) * adv)
    loss = -surrogate.mean()
    with torch.no_grad():
        stats = {
            "clip_fraction": ((ratio - 1).abs() > clip_range).float().mean().item(),
            "approx_kl": ((ratio - 1) - log_ratio).mean().item(),
        }
    return loss, stats


def replay(policy: GlimpsePolicy, batch: EpisodeBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Re-run ``policy`` through the stored episodes from its initial state.

    Returns ``log_probs (S, B)`` of the stored locations, ``entropies (S, B)``,
    ``values (S, B)`` and the classifying steps' ``logits (L, B, C)``, all with gradients.
    """
    steps = batch.rewards.shape[0]
    first = {k: v[0] for k, v in batch.obs.items()}
    state = policy.initial_state(first)
    logps, ents, values, logits = [], [], [], []
    for t in range(steps):
        obs = {k: v[t] for k, v in batch.obs.items()}
        out = policy.evaluate_actions(obs, state, batch.locations[t])
        state = out.state
        logps.append(out.log_prob)
        ents.append(out.entropy)
        values.append(out.value)
        if (t + 1) % batch.num_glimpses == 0:
            logits.append(out.logits)
    return torch.stack(logps), torch.stack(ents), torch.stack(values), torch.stack(logits)


def ppo_hybrid_loss(
    policy: GlimpsePolicy,
    batch: EpisodeBatch,
    advantages: Tensor,
    returns: Tensor,
    cfg: PPOConfig,
) -> tuple[Tensor, dict[str, float]]:
    """The hybrid loss of a minibatch of whole episodes (module docstring).

    ``advantages`` and ``returns`` are ``(S - 1, B)`` from :func:`location_advantages`.
    """
    log_probs, entropies, values, logits = replay(policy, batch)
    used = slice(0, batch.rewards.shape[0] - 1)
    adv = advantages
    if cfg.normalize_advantages and distributed.active():  # the global minibatch's moments
        n, total, squares = distributed.reduce_counts(adv.numel(), adv.sum(), adv.square().sum())
        if n > 1:
            mean = total / n
            std = max((squares - n * mean**2) / (n - 1), 0.0) ** 0.5
            adv = (adv - mean) / (std + 1e-8)
    elif cfg.normalize_advantages and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    if adv.numel():
        policy_loss, stats = ppo_clip_loss(
            log_probs[used], batch.log_probs[used], adv, cfg.clip_range
        )
        value_loss = F.mse_loss(values[used], returns)
        entropy = entropies[used].mean()
    else:  # one glimpse per target: no location is ever used
        zero = values.sum() * 0
        policy_loss, value_loss, entropy = zero, zero, zero
        stats = {"clip_fraction": 0.0, "approx_kl": 0.0}
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.T.reshape(-1))
    loss = ce + cfg.policy_coef * policy_loss + cfg.value_coef * value_loss
    loss = loss - cfg.entropy_coef * entropy
    metrics = {
        "losses/total": loss.item(),
        "losses/classification": ce.item(),
        "losses/policy": policy_loss.item(),
        "losses/value": value_loss.item(),
        "losses/entropy": entropy.item(),
        "charts/clip_fraction": stats["clip_fraction"],
        "charts/approx_kl": stats["approx_kl"],
    }
    return loss, metrics


def ppo_update(
    policy: GlimpsePolicy,
    optimizer: torch.optim.Optimizer,
    batch: EpisodeBatch,
    cfg: PPOConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Several epochs of minibatch updates on one rollout; returns the mean metrics.

    Minibatches are random splits of the *episodes* (``cfg.minibatches`` per epoch), each
    replayed from the initial state with the current weights (:func:`replay`).
    """
    b = batch.num_episodes
    if cfg.minibatches > b:
        raise ValueError(f"minibatches ({cfg.minibatches}) exceeds the episodes per rollout ({b})")
    adv, ret = location_advantages(batch, cfg.gamma, cfg.gae_lambda)
    totals: dict[str, float] = {}
    count = 0
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(b, generator=generator).to(batch.rewards.device)
        kls = []
        for idx in perm.tensor_split(cfg.minibatches):
            loss, m = ppo_hybrid_loss(policy, batch.select(idx), adv[:, idx], ret[:, idx], cfg)
            apply_gradients(loss, policy, optimizer, cfg.grad_clip)  # rank-averaged
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v
            count += 1
            kls.append(m["charts/approx_kl"])
        # every rank stops at the same pass: the KL is averaged over ranks
        if cfg.target_kl and distributed.all_reduce(sum(kls) / len(kls), "mean") > cfg.target_kl:
            break
    out = {k: v / count for k, v in totals.items()}
    out["charts/optimizer_steps"] = float(count)
    correct = (batch.logits.argmax(-1).T == batch.labels).all(1).float()
    out["train/accuracy"] = correct.mean().item()
    out["train/reward"] = batch.rewards.sum(0).mean().item()
    out["charts/value"] = batch.values.mean().item()
    out["charts/advantage_abs"] = adv.abs().mean().item() if adv.numel() else 0.0
    return out
