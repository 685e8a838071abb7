"""Glimpse agents in stable-baselines3: a features extractor, sb3-contrib ``RecurrentPPO``
with an LSTM policy, evaluation and a TensorBoard callback.

- :class:`GlimpseExtractor`: RAM's glimpse network ``f_g`` ("what" + "where",
  :class:`agents.ram.GlimpseNetwork`; Mnih et al. 2014) as a ``BaseFeaturesExtractor`` for
  ``MultiInputPolicy`` / ``MultiInputLstmPolicy``, plus the episode-progress ``step``
  input (and a linear view of DRAM's ``context`` when the env has one).
- :func:`build_recurrent_ppo`: ``RecurrentPPO`` (Schulman et al. 2017 with an LSTM core,
  sb3-contrib) on :class:`envs.sb3.SB3VecEnv` -- all episodes in one process, no
  ``SubprocVecEnv``. A single glimpse is not Markov, so the recurrent policy is the default.
- Classification is what the env makes it: the flat action
  (:class:`envs.spaces.ActionCodec`, ``multidiscrete``) is ``(grid x, grid y, label)``; the
  env reads the label on the classifying step and pays 1 if it is right. So the classifier
  is learned from that reward by the policy gradient alone (no cross-entropy), unlike
  :mod:`agents.ppo`'s hybrid.
- :func:`sb3_predict` / :func:`evaluate_sb3`: deterministic episodes on given dataset
  indices, scored by :func:`glimpse.evaluation.evaluate` (the evaluation every model
  shares).
- :class:`GlimpseEvalCallback`: evaluation accuracy, glimpse-trajectory playback
  (:func:`glimpse.viz.log_trajectories`, the RAM trainer's format), SB3's training
  statistics and checkpoints, into the :class:`glimpse.training.Run` folder; global step
  = SB3's ``num_timesteps`` = environment steps (glimpses).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from agents.config import PPOTrainConfig
from agents.environments import build_envs
from agents.ram import GlimpseNetwork
from envs import GlimpseVectorEnv
from envs.spaces import ActionCodec
from glimpse.evaluation import evaluate
from glimpse.loop import Checkpoints, Report, metrics_record
from glimpse.rng import rng_state, set_rng_state
from glimpse.training import Run
from glimpse.viz import log_trajectories, render_fixations, tensorboard_ncols

if TYPE_CHECKING:
    from sb3_contrib import RecurrentPPO

__all__ = [
    "GlimpseEvalCallback",
    "GlimpseExtractor",
    "build_recurrent_ppo",
    "evaluate_sb3",
    "log_sb3_playback",
    "sb3_predict",
    "train_sb3",
]

# SB3's logger keys -> this project's tags.
_SB3_TAGS = {
    "train/loss": "losses/total",
    "train/policy_gradient_loss": "losses/policy",
    "train/value_loss": "losses/value",
    "train/entropy_loss": "losses/entropy",
    "train/approx_kl": "charts/approx_kl",
    "train/clip_fraction": "charts/clip_fraction",
    "train/explained_variance": "charts/explained_variance",
    "train/learning_rate": "charts/lr",
}


class GlimpseExtractor(BaseFeaturesExtractor):
    """Glimpse-network features of a glimpse observation dict.

    ``features = [f_g(glimpse, location), step(, relu(Linear(context)))]`` with ``f_g``
    :class:`agents.ram.GlimpseNetwork` (Mnih et al. 2014).

    Args:
        observation_space: the env's ``Dict`` space (``glimpse``, ``location``, ``step``
            and optionally ``context``).
        what_dim, where_dim, glimpse_dim: glimpse-network sizes (RAM: 128, 128, 256).
        context_dim: width of the context view's features (when the space has one).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        what_dim: int = 128,
        where_dim: int = 128,
        glimpse_dim: int = 256,
        context_dim: int = 128,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict) or not {
            "glimpse",
            "location",
            "step",
        } <= set(observation_space.spaces):
            raise ValueError(
                "GlimpseExtractor needs a Dict space with 'glimpse', 'location' and 'step', "
                f"got {observation_space}"
            )
        has_context = "context" in observation_space.spaces
        super().__init__(observation_space, glimpse_dim + 1 + (context_dim if has_context else 0))
        self.glimpse_net = GlimpseNetwork(
            observation_space["glimpse"].shape, what_dim, where_dim, glimpse_dim
        )
        self.context = (
            nn.Linear(int(np.prod(observation_space["context"].shape)), context_dim)
            if has_context
            else None
        )

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        parts = [
            self.glimpse_net(observations["glimpse"], observations["location"]),
            observations["step"].reshape(-1, 1),
        ]
        if self.context is not None:
            parts.append(torch.relu(self.context(observations["context"].flatten(1))))
        return torch.cat(parts, 1)


def _cosine(lr: float):
    """SB3 schedule (of progress remaining, 1 -> 0): cosine annealing from ``lr`` to 0."""

    def schedule(progress_remaining: float) -> float:
        return lr * 0.5 * (1 + math.cos(math.pi * (1 - progress_remaining)))

    return schedule


def build_recurrent_ppo(
    cfg: PPOTrainConfig, train_env: GlimpseVectorEnv, device: torch.device | str = "cpu"
) -> RecurrentPPO:
    """``RecurrentPPO`` with ``MultiInputLstmPolicy`` over :class:`GlimpseExtractor` on the
    SB3 face of ``train_env`` (``cfg.batch_size`` envs, rollouts of ``sb3_n_steps``)."""
    from sb3_contrib import RecurrentPPO

    from envs.sb3 import SB3VecEnv

    vec = SB3VecEnv(train_env, "multidiscrete", cfg.sb3_grid)
    n_steps = cfg.sb3_n_steps or cfg.episode_steps()
    rollout = n_steps * train_env.num_envs
    policy_kwargs: dict[str, Any] = {
        "features_extractor_class": GlimpseExtractor,
        "lstm_hidden_size": cfg.hidden,
        "net_arch": {"pi": [], "vf": []},
        # One LSTM for actor and critic (sb3-contrib's default runs a second one for the
        # critic, which doubles the cost of every update on a CPU).
        "shared_lstm": True,
        "enable_critic_lstm": False,
    }
    return RecurrentPPO(
        "MultiInputLstmPolicy",
        vec,
        learning_rate=_cosine(cfg.lr) if cfg.lr_schedule == "cosine" else cfg.lr,
        n_steps=n_steps,
        batch_size=max(1, rollout // cfg.minibatches),
        n_epochs=cfg.update_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        normalize_advantage=cfg.normalize_advantages,
        ent_coef=cfg.sb3_ent_coef,
        vf_coef=cfg.baseline_coef,
        max_grad_norm=cfg.grad_clip if cfg.grad_clip > 0 else 1e9,
        target_kl=cfg.target_kl or None,
        policy_kwargs=policy_kwargs,
        seed=cfg.seed,
        device=device,
        verbose=0,
    )


@torch.no_grad()
def sb3_predict(
    model: Any, venv: GlimpseVectorEnv, indices: Tensor, grid_size: int
) -> tuple[Tensor, Tensor]:
    """Deterministic episodes of an SB3 (recurrent or not) model on dataset ``indices``.

    Returns the predicted labels ``(n, L)`` (the label actions of the classifying steps)
    and the fixations ``(n, S, 2)``. ``venv`` (``array_type="torch"``, no early stop) must
    have ``num_envs >= n``; spare episodes replay the last image and are discarded.
    """
    n = indices.numel()
    if n > venv.num_envs:
        raise ValueError(f"{n} images need num_envs >= {n}, got {venv.num_envs}")
    if venv.config.early_stop or venv.array_type != "torch":
        raise ValueError("sb3_predict needs a torch GlimpseVectorEnv without early_stop")
    rep = (
        torch.cat([indices, indices[-1:].expand(venv.num_envs - n)])
        if n < venv.num_envs
        else indices
    )
    codec = ActionCodec(venv.config, "multidiscrete", grid_size)
    obs, _ = venv.reset(options={"indices": rep})
    state, starts = None, np.ones(venv.num_envs, dtype=bool)
    preds = []
    cfg = venv.config
    for t in range(cfg.max_steps):
        np_obs = {k: v.cpu().numpy() for k, v in obs.items()}
        actions, state = model.predict(
            np_obs, state=state, episode_start=starts, deterministic=True
        )
        starts = np.zeros(venv.num_envs, dtype=bool)
        location, label, _ = codec.decode(actions)
        if (t + 1) % cfg.num_glimpses == 0:
            preds.append(label[:n])
        obs, *_ = venv.step({"location": location, "label": label})
    fixations = venv.episodes(n).fixations[:, : cfg.max_steps].cpu()
    return torch.stack(preds, 1), fixations


def evaluate_sb3(
    model: Any, venv: GlimpseVectorEnv, cfg: PPOTrainConfig, desc: str = "eval"
) -> dict[str, float]:
    """Accuracy of an SB3 model on every image of ``venv``'s split (shared evaluation)."""

    def run(idx: Tensor) -> Tensor:
        return sb3_predict(model, venv, idx, cfg.sb3_grid)[0]

    return evaluate(run, venv.source.labels, cfg.eval_batch_size, desc)


def log_sb3_playback(
    run: Run, model: Any, venv: GlimpseVectorEnv, n: int, step: int, grid_size: int
) -> None:
    """Log the glimpse trajectories of the first ``n`` images of ``venv``'s split, in the
    format of :func:`agents.playback.log_playback`: the model's own deterministic episodes
    (:func:`sb3_predict`) drawn by :func:`glimpse.viz.render_fixations`."""
    if n <= 0 or not run.enabled:
        return
    n = min(n, venv.num_envs, len(venv.source))
    preds, fixations = sb3_predict(model, venv, torch.arange(n), grid_size)
    mdp = venv.config
    images, labels, _ = venv.episodes(n)
    frames = render_fixations(
        images,
        fixations,
        mdp.glimpse_size,
        mdp.num_scales,
        mdp.scale_factor,
        labels=labels,
        predictions=preds,
        ncols=tensorboard_ncols(*images.shape[-2:]),
    )
    log_trajectories(run.writer, "eval/trajectories", frames, step)


def sb3_state(model: Any, **extra: Any) -> dict[str, Any]:
    """A ``weights_only``-loadable checkpoint of an SB3 model: policy and optimizer state
    dicts, ``num_timesteps`` and RNG states, plus ``extra``."""
    return {
        "model": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "num_timesteps": int(model.num_timesteps),
        "rng": rng_state(),
        **extra,
    }


def load_sb3_state(model: Any, state: dict[str, Any]) -> None:
    """Restore what :func:`sb3_state` saved into ``model``."""
    model.policy.load_state_dict(state["model"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model.num_timesteps = int(state["num_timesteps"])
    set_rng_state(state["rng"])


class GlimpseEvalCallback(BaseCallback):
    """Evaluate every ``eval_every`` env steps and log to ``run`` (global step = SB3's
    ``num_timesteps``, i.e. environment steps).

    At each evaluation: ``eval/{accuracy,error}`` on ``eval_env``'s split,
    ``charts/elapsed_s``, glimpse playback of ``playback`` images, and ``best``/``last``
    checkpoints (:func:`sb3_state`). After each rollout: ``train/{accuracy,reward}`` of the
    episodes that ended in it and SB3's own statistics of the previous update under
    ``losses/`` and ``charts/``.
    """

    def __init__(
        self,
        run: Run,
        eval_env: GlimpseVectorEnv,
        cfg: PPOTrainConfig,
        eval_every: int,
        total: int,
        best: float = -1.0,
        elapsed: float = 0.0,
        stream: Any = None,
    ) -> None:
        super().__init__()
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every}")
        self.run, self.eval_env, self.cfg = run, eval_env, cfg
        self.eval_every, self.total = eval_every, total
        self.best, self.elapsed0, self.stream = best, elapsed, stream
        self.last_eval = -1
        self._correct: list[float] = []
        self._returns: list[float] = []
        self._running: float | None = None
        self._bar = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.t_start = time.time()
        self.next_eval = (self.num_timesteps // self.eval_every + 1) * self.eval_every
        self._bar = tqdm(
            total=self.total, initial=self.num_timesteps, desc="sb3-recurrent-ppo", disable=None
        )
        self._t_rollout = time.perf_counter()
        self._steps_rollout = self.num_timesteps

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self._correct.append(info["episode"]["correct"])
                self._returns.append(info["episode"]["r"])
        if self._bar is not None:
            self._bar.update(self.training_env.num_envs)
        if self.num_timesteps >= self.next_eval:
            self.evaluate()
            while self.next_eval <= self.num_timesteps:
                self.next_eval += self.eval_every
        return True

    def _on_rollout_end(self) -> None:
        values: dict[str, float] = {}
        if self._correct:
            acc = float(np.mean(self._correct))
            values["train/accuracy"] = acc
            values["train/reward"] = float(np.mean(self._returns))
            self._running = acc if self._running is None else 0.9 * self._running + 0.1 * acc
            if self._bar is not None:
                self._bar.set_postfix(
                    acc=f"{self._running:.3f}", best_val=f"{max(self.best, 0):.3f}"
                )
        self._correct, self._returns = [], []
        for key, tag in _SB3_TAGS.items():
            if key in self.model.logger.name_to_value:
                values[tag] = self.model.logger.name_to_value[key]
        now = time.perf_counter()
        values["charts/env_steps_per_s"] = (self.num_timesteps - self._steps_rollout) / max(
            now - self._t_rollout, 1e-9
        )
        self._t_rollout, self._steps_rollout = now, self.num_timesteps
        self.run.log_scalars(values, self.num_timesteps)

    def _on_training_end(self) -> None:
        # A final evaluation, unless the last one is less than a rollout old (SB3 finishes
        # the rollout that crosses the budget, a few steps past the last evaluation).
        rollout = self.training_env.num_envs * self.model.n_steps
        if self.last_eval < 0 or self.num_timesteps - self.last_eval >= rollout:
            self.evaluate()
        if self._bar is not None:
            self._bar.close()

    def evaluate(self) -> dict[str, float]:
        """Validation accuracy now; logs, checkpoints and returns it."""
        step = self.num_timesteps
        val = evaluate_sb3(self.model, self.eval_env, self.cfg, desc="val")
        elapsed = self.elapsed0 + time.time() - self.t_start
        self.run.log_scalars(
            {
                "eval/accuracy": val["accuracy"],
                "eval/error": val["error"],
                "charts/elapsed_s": elapsed,
            },
            step,
        )
        log_sb3_playback(
            self.run, self.model, self.eval_env, self.cfg.playback, step, self.cfg.sb3_grid
        )
        improved = val["accuracy"] > self.best
        self.best = max(self.best, val["accuracy"])
        extra = {"best": self.best, "elapsed": elapsed, "global_step": step}
        if self.stream is not None:
            extra["stream"] = self.stream.state_dict()
        Checkpoints(self.run).save(sb3_state(self.model, **extra), improved)
        self.last_eval = step
        print(
            f"env step {step}: val accuracy {val['accuracy']:.4f} (best {self.best:.4f}), "
            f"{elapsed:.0f} s",
            flush=True,
        )
        return val


def train_sb3(cfg: PPOTrainConfig) -> dict[str, Any]:
    """The ``sb3-recurrent-ppo`` branch of :func:`agents.ppo_train.train_ppo`: SB3's own
    ``learn()`` (one process) with :class:`GlimpseEvalCallback` evaluating, checkpointing
    (:class:`glimpse.loop.Checkpoints`) and logging; ``metrics.json`` in the one schema of
    :func:`glimpse.loop.metrics_record` (``train_flops``/``inference_flops_per_image``:
    ``None``, not counted inside SB3).

    Resuming restores the policy, optimizer, RNG, data order and step count; the rollout
    buffer and LSTM states start afresh (the first rollout after a resume begins with new
    episodes), so a resumed run is close to, not bit-identical with, an uninterrupted one.
    """
    device = cfg.setup()
    run = Run(cfg.run_name, cfg, cfg.runs_root, resume=cfg.resume)
    try:
        return _train_sb3(cfg, device, run)
    finally:
        run.close()


def _train_sb3(cfg: PPOTrainConfig, device: torch.device, run: Run) -> dict[str, Any]:
    from stable_baselines3.common.logger import Logger

    train_env, evals = build_envs(cfg, device)
    train_env.reset(seed=cfg.seed)
    model = build_recurrent_ppo(cfg, train_env, device)
    model.set_logger(Logger(folder=None, output_formats=[]))
    total, eval_every = cfg.budget(len(train_env.source))
    best, elapsed = -1.0, 0.0
    state = run.resume_state(device)
    if state is not None:
        load_sb3_state(model, state)
        model.env._reset_seeds()  # keep the restored data order (no reseeding on reset)
        best, elapsed = state["best"], state["elapsed"]
        train_env.stream.load_state_dict(state["stream"])
    else:
        run.log_hparams()
    callback = GlimpseEvalCallback(
        run, evals["val"], cfg, eval_every, total, best, elapsed, train_env.stream
    )
    t_start = time.perf_counter()
    start_steps = int(model.num_timesteps)
    remaining = total - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=callback, log_interval=1, reset_num_timesteps=state is None)
    best_state = run.load_checkpoint("best", device)
    if best_state is not None:
        model.policy.load_state_dict(best_state["model"])
    test = evaluate_sb3(model, evals["test"], cfg, desc="test")
    steps = int(model.num_timesteps)
    per_rollout = train_env.num_envs * model.n_steps
    mdp = train_env.config
    details: dict[str, Any] = {"mc_samples": 1}
    if "digit_accuracy" in test:
        details["test_digit_accuracy"] = test["digit_accuracy"]
    report = Report(
        test_error=test["error"],
        protocol="deterministic",
        protocols={"deterministic": {"test_error": test["error"]}},
        selection="best.pt: highest validation accuracy (deterministic policy) at an evaluation",
        details=details,
    )
    for entry in report.protocols.values():
        entry["val_error"] = 1 - callback.best
    session = time.perf_counter() - t_start
    result = metrics_record(
        method="sb3-recurrent-ppo",
        task=cfg.task,
        cfg=cfg,
        report=report,
        val_best_accuracy=callback.best,
        budget=None,
        updates=steps // per_rollout,
        images_seen=steps // cfg.episode_steps(),
        env_steps=steps,
        global_step_unit="env_steps",
        train_seconds=callback.elapsed0 + session,
        train_seconds_this_session=session,
        start_update=start_steps // per_rollout,
        train_flops_per_update=None,
        cost={
            "inference_flops_per_image": None,
            "pixels_per_image": mdp.max_steps * mdp.num_scales * mdp.glimpse_size**2,
            "params": sum(p.numel() for p in model.policy.parameters()),
        },
        device=device,
        epochs=-(-total // eval_every),
    )
    run.log_scalars({"eval/test_accuracy": test["accuracy"]}, steps)
    run.write_json("metrics.json", result)
    print(f"test accuracy {test['accuracy']:.4f} (error {test['error']:.2%})", flush=True)
    return result
