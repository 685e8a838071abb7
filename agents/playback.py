"""What a glimpse agent looked at: its own deterministic rollouts, drawn by the one renderer.

Each agent family plays its episodes with its own predict function and hands the
fixations and predictions, with the images and labels the env reports
(:meth:`envs.vector.GlimpseVectorEnv.episodes`), to :func:`glimpse.viz.render_fixations`:

- :func:`render_episodes`: REINFORCE and PPO-hybrid policies (RAM, DRAM), mean locations
  (Mnih et al. 2014's test-time policy) via :func:`agents.reinforce.predict`;
- :func:`render_parts`: the parts agent's most likely parts (:func:`agents.parts.predict_parts`),
  one part per frame;
- the SB3 agent's frames come from :func:`agents.sb3.log_sb3_playback` (beside its
  ``sb3_predict``, which its evaluation callback calls).

The training-time hooks :func:`log_playback` and :func:`log_parts_playback` log the first
``n`` validation images' episodes to TensorBoard (:func:`glimpse.viz.log_trajectories`);
``scripts/playback.py`` (:mod:`glimpse.experiments.playback`) exports the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.parts import PartsNet, predict_parts
from agents.policy import GlimpsePolicy
from agents.reinforce import predict
from envs import GlimpseVectorEnv
from glimpse.training import Run
from glimpse.viz import log_trajectories, render_fixations, tensorboard_ncols

__all__ = ["log_parts_playback", "log_playback", "render_episodes", "render_parts"]


def _check_indices(venv: GlimpseVectorEnv, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    n = idx.numel()
    if n == 0 or n > venv.num_envs:
        raise ValueError(f"need 1..{venv.num_envs} episode indices (the env's size), got {n}")
    if int(idx.min()) < 0 or int(idx.max()) >= len(venv.source):
        raise ValueError(
            f"indices must lie in [0, {len(venv.source)}) for this split, got {idx.tolist()}"
        )
    return idx


def render_episodes(
    policy: GlimpsePolicy,
    venv: GlimpseVectorEnv,
    indices: Sequence[int] | torch.Tensor,
    ncols: int | None = None,
    **render_kwargs: Any,
) -> np.ndarray:
    """Play the episodes of dataset ``indices`` of ``venv``'s split (deterministic: mean
    locations) and render them tiled: ``(T, H'', W'', 3)`` uint8, each frame captioned with
    the true class and, on the last frame, the prediction (:func:`glimpse.viz.render_fixations`;
    ``render_kwargs`` such as ``upscale`` or ``footprint`` go to it)."""
    idx = _check_indices(venv, indices)
    n = idx.numel()
    preds, ro = predict(policy, venv, idx)
    mdp = venv.config
    images, labels, _ = venv.episodes(n)
    return render_fixations(
        images,
        ro.locations[: mdp.max_steps, :n].transpose(0, 1),  # (n, S, 2)
        mdp.glimpse_size,
        mdp.num_scales,
        mdp.scale_factor,
        labels=labels,
        predictions=preds,
        ncols=ncols,
        **render_kwargs,
    )


def _tensorboard_ncols(venv: GlimpseVectorEnv) -> int:
    """Episodes per row of the TensorBoard frames (legible: not scaled down there)."""
    return tensorboard_ncols(*venv.source.images.shape[-2:])


def render_parts(
    net: PartsNet,
    venv: GlimpseVectorEnv,
    indices: Sequence[int] | torch.Tensor,
    ncols: int | None = None,
) -> np.ndarray:
    """The parts agent's chosen parts on dataset ``indices`` of ``venv``'s split, one part
    per frame (no path), captioned with the first label and the combined prediction."""
    idx = _check_indices(venv, indices)
    n = idx.numel()
    preds, ro = predict_parts(net, venv, idx)
    mdp = venv.config
    images, labels, _ = venv.episodes(n)
    return render_fixations(
        images,
        ro.locations[:, :n].transpose(0, 1),  # (n, S, K, 2)
        mdp.glimpse_size,
        mdp.num_scales,
        mdp.scale_factor,
        labels=labels[:, 0],
        predictions=preds,
        ncols=ncols,
        show_path=False,
    )


def log_playback(
    run: Run, policy: GlimpsePolicy, venv: GlimpseVectorEnv, n: int, step: int, cfg: Any
) -> None:
    """Log the glimpse trajectories of the first ``n`` images of ``venv``'s split (rendered
    by :func:`render_episodes`, the same frames ``scripts/playback.py`` exports) under
    ``eval/trajectories``, as many per row as TensorBoard shows at full size
    (:func:`glimpse.viz.tensorboard_ncols`). ``cfg``: the run's config (unused; kept for
    the trainers)."""
    if n <= 0 or not run.enabled:
        return
    n = min(n, venv.num_envs, len(venv.source))
    frames = render_episodes(policy, venv, torch.arange(n), _tensorboard_ncols(venv))
    log_trajectories(run.writer, "eval/trajectories", frames, step)


def log_parts_playback(run: Run, net: PartsNet, venv: GlimpseVectorEnv, n: int, step: int) -> None:
    """Log the chosen parts of the first ``n`` images of ``venv``'s split, one per frame,
    under ``eval/parts`` (:func:`render_parts`)."""
    if n <= 0 or not run.enabled:
        return
    n = min(n, venv.num_envs, len(venv.source))
    frames = render_parts(net, venv, torch.arange(n), _tensorboard_ncols(venv))
    log_trajectories(run.writer, "eval/parts", frames, step)
