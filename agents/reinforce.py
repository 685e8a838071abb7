"""Batched REINFORCE with the hybrid loss of Mnih et al. (2014).

- **Classification** is trained by backpropagation: cross-entropy of the logits at each
  classifying step against the label the env reports in ``info``.
- **Locations** are trained by REINFORCE (Williams 1992): for the location chosen at
  step ``t`` (used for the glimpse at ``t + 1``) the gradient is
  ``-(G_{t+1} - b_t) * grad log pi(l_{t+1} | s_t)`` with ``G_{t+1}`` the (undiscounted)
  reward collected after step ``t``. The location of the final step is never used by the
  env and gets no gradient. ``log pi`` is that of the action actually sent
  (:mod:`agents.distributions`).
- **Baseline** ``b_t`` is trained by regression onto ``G_{t+1}``; the advantage uses a
  detached baseline, so its gradient never mixes with the policy's (and by default the
  baseline head sees a detached core state: the regression does not shape it).
- Optional entropy bonus and gradient-norm clipping.

Rollouts go through :class:`envs.GlimpseVectorEnv`: every episode of a batch starts on
``reset`` and ends after exactly ``num_targets * T`` steps (no early stopping here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from agents.policy import GlimpsePolicy
from envs import GlimpseVectorEnv

__all__ = [
    "PROTOCOLS",
    "ReinforceConfig",
    "Rollout",
    "check_rollout_env",
    "classification_loss",
    "collect_rollout",
    "episode_draws",
    "predict",
    "reinforce_loss",
]

PROTOCOLS = ("single-mean", "single-sampled", "mc")
"""Evaluation protocols of a hard agent: one episode per image with the policy's mean
locations (deterministic given the first fixation), one episode with sampled locations,
or Monte-Carlo averaging of ``M`` sampled episodes (labelled ``mc<M>`` in results)."""


@dataclass(frozen=True)
class ReinforceConfig:
    """Loss weights of the hybrid objective."""

    baseline_coef: float = 1.0
    """Weight of the baseline's squared error."""
    per_step_loss: bool = False
    """Cross-entropy of the classifier's readout after every glimpse (mean over the
    steps), not only after the last: trains an agent that can answer early (the
    accuracy-against-glimpses curves of issue 17). The reward is unchanged."""
    entropy_coef: float = 0.0
    """Weight of the location-policy entropy bonus."""
    policy_coef: float = 1.0
    """Weight of the REINFORCE term."""


@dataclass
class Rollout:
    """A batch of complete episodes, time-major (``S`` steps, ``B`` episodes)."""

    log_probs: Tensor
    """``(S, B)`` log-probability of the location chosen at each step."""
    entropies: Tensor
    """``(S, B)``."""
    values: Tensor
    """``(S, B)`` baseline ``b_t``."""
    rewards: Tensor
    """``(S, B)`` reward of each step."""
    logits: Tensor
    """``(L, B, C)`` logits of the ``L = num_targets`` classifying steps."""
    labels: Tensor
    """``(B, L)`` true labels (from the env's ``info``)."""
    locations: Tensor
    """``(S + 1, B, 2)`` fixations: the initial one, then each step's chosen location."""
    step_logits: Tensor | None = None
    """``(S, B, C)`` the classifier's logits after every glimpse (the readout of step
    ``t`` has seen glimpses ``1 .. t + 1`` of its target); the classifying steps' rows are
    :attr:`logits`."""

    @property
    def predictions(self) -> Tensor:
        """``(B, L)`` argmax labels."""
        return self.logits.argmax(-1).T


def check_rollout_env(venv: GlimpseVectorEnv, who: str = "REINFORCE") -> None:
    """Raise a ``ValueError`` unless ``venv`` plays fixed-length episodes on torch tensors
    (what batched rollouts of :func:`collect_rollout` and PPO's need)."""
    if venv.config.early_stop:
        raise ValueError(
            f"{who} rollouts need fixed-length episodes; build the env with early_stop=False"
        )
    if venv.array_type != "torch":
        raise ValueError(f"{who} needs a GlimpseVectorEnv with array_type='torch'")


def collect_rollout(
    policy: GlimpsePolicy,
    venv: GlimpseVectorEnv,
    deterministic: bool = False,
    options: dict | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Rollout:
    """Play one batch of episodes (``venv.num_envs`` of them) from ``reset`` to the end.

    ``noise`` ``(max_steps, num_envs, 2)``: the standard normal draws of the sampled
    locations (default: drawn from ``generator``, i.e. depending on the whole batch).
    A policy's own first fixations (:meth:`GlimpsePolicy.first_location`) replace the
    ``init_loc`` of ``options``.
    """
    check_rollout_env(venv)
    cfg = venv.config
    if noise is not None and noise.shape != (cfg.max_steps, venv.num_envs, 2):
        raise ValueError(
            f"noise must have shape {(cfg.max_steps, venv.num_envs, 2)}, got {tuple(noise.shape)}"
        )
    first = policy.first_location(venv.num_envs, venv.device)
    if first is not None:  # a fixed scan path starts where it starts
        options = {**(options or {}), "init_loc": first}
    obs, info = venv.reset(options=options)
    labels = info["label"].reshape(venv.num_envs, -1)
    state = policy.initial_state(obs)
    logps, ents, values, rewards, logits, every = [], [], [], [], [], []
    locations = [obs["location"]]
    steps = cfg.max_steps
    for t in range(steps):
        out = policy.act(obs, state, deterministic, generator, None if noise is None else noise[t])
        classify = (t + 1) % cfg.num_glimpses == 0
        # the core detaches the location unless the env is differentiable (glimpse-soft)
        action = {"location": out.location, "label": out.logits.argmax(1).detach()}
        obs, reward, terminated, _, info = venv.step(action)
        state = out.state
        logps.append(out.log_prob)
        ents.append(out.entropy)
        values.append(out.value)
        rewards.append(reward)
        locations.append(out.location.detach())
        every.append(out.logits)
        if classify:
            logits.append(out.logits)
    if not bool(terminated.all()):
        raise RuntimeError("episodes did not end after num_targets * T steps")
    return Rollout(
        torch.stack(logps),
        torch.stack(ents),
        torch.stack(values),
        torch.stack(rewards),
        torch.stack(logits),
        labels,
        torch.stack(locations),
        torch.stack(every),
    )


def _cross_entropy(ro: Rollout, per_step: bool = False) -> Tensor:
    """Mean cross-entropy of the classifying steps' logits against the env's labels; with
    ``per_step``, of every step's logits against the label of the target it is looking
    for (step ``t`` of an episode of ``T`` glimpses per target: target ``t // T``)."""
    if per_step:
        if ro.step_logits is None:
            raise ValueError("per-step cross-entropy needs a rollout with step_logits")
        steps, num_targets = ro.step_logits.shape[0], ro.labels.shape[1]
        target = torch.arange(steps, device=ro.labels.device) * num_targets // steps
        labels = ro.labels[:, target].T  # (S, B)
        return F.cross_entropy(ro.step_logits.flatten(0, 1), labels.reshape(-1))
    if not ro.logits.shape[0]:
        return ro.logits.sum() * 0
    return F.cross_entropy(ro.logits.reshape(-1, ro.logits.shape[-1]), ro.labels.T.reshape(-1))


def classification_loss(ro: Rollout, per_step: bool = False) -> tuple[Tensor, dict[str, float]]:
    """The classification part of the hybrid loss alone (cross-entropy of the classifying
    steps against the env's labels; ``per_step``: of every step's readout) and its
    metrics: the loss of agents whose locations are not learnt by REINFORCE
    (:mod:`agents.fixed`, :mod:`agents.soft_locations`), so nothing reaches a baseline."""
    ce = _cross_entropy(ro, per_step)
    correct = (ro.predictions == ro.labels).float()
    metrics = {
        "losses/total": ce.item(),
        "losses/classification": ce.item(),
        "train/accuracy": correct.all(1).float().mean().item(),
        "train/reward": ro.rewards.sum(0).mean().item(),
    }
    return ce, metrics


def reinforce_loss(
    ro: Rollout, cfg: ReinforceConfig = ReinforceConfig()
) -> tuple[Tensor, dict[str, float]]:
    """The hybrid loss of a rollout and its parts (module docstring)."""
    steps = ro.rewards.shape[0]
    # G_{t+1}: reward collected after step t (reward-to-go, undiscounted).
    to_go = ro.rewards.flip(0).cumsum(0).flip(0)
    future = torch.cat([to_go[1:], torch.zeros_like(to_go[:1])])  # (S, B)
    used = slice(0, steps - 1)  # the final step's location is never used
    advantage = (future[used] - ro.values[used]).detach()
    policy_loss = -(advantage * ro.log_probs[used]).sum(0).mean()
    baseline_loss = F.mse_loss(ro.values[used], future[used])
    entropy = ro.entropies[used].mean() if steps > 1 else ro.entropies.sum() * 0
    ce = _cross_entropy(ro, cfg.per_step_loss)
    loss = ce + cfg.policy_coef * policy_loss + cfg.baseline_coef * baseline_loss
    loss = loss - cfg.entropy_coef * entropy
    correct = (ro.predictions == ro.labels).float()
    metrics = {
        "losses/total": loss.item(),
        "losses/classification": ce.item(),
        "losses/policy": policy_loss.item(),
        "losses/baseline": baseline_loss.item(),
        "losses/entropy": entropy.item(),
        "train/accuracy": correct.all(1).float().mean().item(),
        "train/reward": ro.rewards.sum(0).mean().item(),
        "charts/baseline": ro.values.mean().item(),
        "charts/advantage_abs": advantage.abs().mean().item() if steps > 1 else 0.0,
    }
    return loss, metrics


_M32 = np.uint64(0xFFFFFFFF)


def _hash32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer mixer (the "lowbias32" constants of C. Wellons' hash prospector),
    elementwise on uint64 arrays holding values in ``[0, 2**32)``. In numpy, where uint64
    products wrap modulo ``2**64`` (so their low 32 bits are the 32-bit product) and a
    small array's operation costs a microsecond, not a torch call's several."""
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & _M32
    return x ^ (x >> np.uint64(16))


def _key(seed: int, index: Tensor | int, sample: Tensor | int) -> np.ndarray:
    """:func:`episode_key` as a uint64 array (checked the same way)."""
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    sample = torch.as_tensor(sample, dtype=torch.long).reshape(-1)
    if not 0 <= int(seed) < 2**16:
        raise ValueError(f"evaluation seed must be in [0, 65536), got {seed}")
    if (sample < 0).any() or (sample >= 2**16).any() or (index < 0).any():
        raise ValueError("sample indices must be in [0, 65536) and image indices >= 0")
    idx = index.cpu().numpy().astype(np.uint64) & _M32
    sam = sample.cpu().numpy().astype(np.uint64)
    k = _hash32(idx ^ _hash32(np.array([int(seed) + 0x9E37], dtype=np.uint64)))
    return _hash32(k ^ _hash32((sam << np.uint64(16)) + np.uint64(0x79B9)))


def episode_key(seed: int, index: Tensor | int, sample: Tensor | int) -> Tensor:
    """The 32-bit key ``(n,)`` of the episodes of images ``index``, Monte-Carlo samples
    ``sample``, under evaluation seed ``seed``: a hash of the triple (seed and sample up
    to ``2**16``, index up to ``2**32``), as an int64 tensor."""
    return torch.from_numpy(_key(seed, index, sample).astype(np.int64))


def _uniform(key: np.ndarray, counter: int) -> Tensor:
    """``(n,)`` float64 uniforms in ``[0, 1)`` (24 bits), one per key, for ``counter``."""
    h = _hash32(key ^ _hash32(np.array([counter + 0x85EB], dtype=np.uint64)))
    return torch.from_numpy((h >> np.uint64(8)).astype(np.float64) / 2**24)


def episode_draws(
    seed: int, indices: Tensor, sample_ids: Tensor, steps: int
) -> tuple[Tensor, Tensor]:
    """Per-episode random numbers, a pure function of ``(seed, image index, sample index)``.

    Returns the uniform first fixations ``(n, 2)`` in ``[-1, 1)`` and the standard normal
    location noise ``(steps, n, 2)`` (Box-Muller) of the ``n`` episodes, computed by a
    counter-based hash (vectorised, the same on every device), so that an evaluation does
    not depend on how the images are batched nor on which other images share a batch.
    """
    if indices.shape != sample_ids.shape or indices.ndim != 1:
        raise ValueError(
            f"indices and sample_ids must be equal-length 1-D tensors, got "
            f"{tuple(indices.shape)} and {tuple(sample_ids.shape)}"
        )
    key = _key(seed, indices, sample_ids)
    init = torch.stack([_uniform(key, 0), _uniform(key, 1)], 1) * 2 - 1
    if steps == 0:
        return init.float(), torch.zeros(0, key.size, 2)
    u1 = torch.stack([1 - _uniform(key, 2 + 2 * t) for t in range(steps)])  # (0, 1]
    u2 = torch.stack([_uniform(key, 3 + 2 * t) for t in range(steps)])
    r = torch.sqrt(-2 * torch.log(u1))
    noise = torch.stack([r * torch.cos(2 * torch.pi * u2), r * torch.sin(2 * torch.pi * u2)], -1)
    return init.float(), noise.float()


@torch.no_grad()
def predict(
    policy: GlimpsePolicy,
    venv: GlimpseVectorEnv,
    indices: Tensor,
    samples: int = 1,
    *,
    sampled: bool | None = None,
    seed: int = 0,
    by_step: bool = False,
) -> tuple[Tensor, Rollout]:
    """Predicted labels ``(n, L)`` for dataset ``indices`` of ``venv``'s source; with
    ``by_step`` (one target per episode only), ``(n, T)``: the classifier's readout after
    each of the ``T`` glimpses (column ``T - 1`` is the episode's prediction).

    - ``samples == 1``, ``sampled=False`` (the default): one episode per image with the
      policy's mean locations (``single-mean``).
    - ``samples == 1``, ``sampled=True``: one episode per image, locations sampled from the
      policy (``single-sampled``; the RAM paper's test-time behaviour as we read it).
    - ``samples = M > 1`` (always sampled): Monte-Carlo evaluation, the class probabilities
      of M sampled episodes per image averaged (``mc<M>``; M times the inference cost).

    The random first fixations (``init_location="random"``) and the location noise of the
    episode of image ``i``, sample ``m`` are drawn from ``(seed, i, m)`` alone
    (:func:`episode_draws`), so predictions do not depend on the batch they are played in.
    The noise is handed to the policy under both protocols: a learnt policy's mean
    locations ignore it, the random-location control (:class:`agents.fixed.RandomLocations`),
    which has no mean, draws its locations from it.
    ``venv.num_envs`` must be at least ``n * M``; spare episodes replay the last image and
    are discarded.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if sampled is None:
        sampled = samples > 1
    if samples > 1 and not sampled:
        raise ValueError("Monte-Carlo evaluation (samples > 1) needs sampled=True")
    if by_step and venv.config.num_targets != 1:
        raise ValueError(
            f"by_step readouts need one target per episode, got {venv.config.num_targets}"
        )
    n = indices.numel()
    need = n * samples
    if need > venv.num_envs:
        raise ValueError(
            f"{n} images x {samples} samples need num_envs >= {need}, got {venv.num_envs}"
        )
    indices = indices.to(torch.long).cpu()
    rep = indices.repeat(samples)
    sample_ids = torch.arange(samples).repeat_interleave(n)
    init, noise = episode_draws(seed, rep, sample_ids, venv.config.max_steps)
    if venv.config.init_location != "random":
        init = torch.zeros_like(init)
    spare = venv.num_envs - need
    if spare:
        rep = torch.cat([rep, rep[-1:].expand(spare)])
        init = torch.cat([init, torch.zeros(spare, 2)])
        noise = torch.cat([noise, torch.zeros(noise.shape[0], spare, 2)], 1)
    was_training = policy.training
    policy.eval()
    try:
        ro = collect_rollout(
            policy,
            venv,
            deterministic=not sampled,
            options={"indices": rep, "init_loc": init},
            noise=noise.to(venv.device),  # unused by a learnt policy's mean locations
        )
    finally:
        policy.train(was_training)
    logits = ro.step_logits if by_step else ro.logits
    probs = logits[:, :need].softmax(-1)  # (L or T, n*M, C)
    probs = probs.reshape(probs.shape[0], samples, n, -1).mean(1)
    return probs.argmax(-1).T, ro
