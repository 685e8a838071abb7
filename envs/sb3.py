"""Stable-baselines3 face of :class:`envs.GlimpseVectorEnv`: a ``VecEnv`` with flat actions."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from envs.spaces import ActionCodec
from envs.vector import GlimpseVectorEnv

__all__ = ["SB3VecEnv"]


def _to_numpy(obs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in obs.items()}


class SB3VecEnv(VecEnv):
    """Stable-baselines3 ``VecEnv`` over a :class:`GlimpseVectorEnv` (no SubprocVecEnv).

    All ``num_envs`` episodes are stepped in one batched call of the core. Actions are flat
    (:class:`envs.spaces.ActionCodec`: ``"multidiscrete"`` for PPO/A2C/RecurrentPPO,
    ``"box"`` also for SAC/TD3); observations are dicts of numpy arrays (use
    ``MultiInputPolicy``). Episodes end and restart in the same step, SB3 style: a finished
    sub-env returns the first observation of its next episode, with the last one of the
    old episode in ``infos[i]["terminal_observation"]`` and ``infos[i]["episode"]``
    holding ``r`` (return), ``l`` (length) and ``correct`` (fraction of targets right).
    """

    def __init__(
        self, venv: GlimpseVectorEnv, mode: str = "multidiscrete", grid_size: int = 9
    ) -> None:
        self.venv = venv
        self.codec = ActionCodec(venv.config, mode, grid_size)
        super().__init__(venv.num_envs, venv.single_observation_space, self.codec.space)
        self.render_mode = venv.render_mode
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(venv.num_envs)
        self._lengths = np.zeros(venv.num_envs, dtype=np.int64)

    def reset(self) -> dict[str, np.ndarray]:
        seed = self._seeds[0] if self._seeds else None
        self.venv._seed(seed)
        obs = self.venv._reset_slots(None)
        self._reset_seeds()
        self._reset_options()
        self._returns[:] = 0
        self._lengths[:] = 0
        return _to_numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        venv = self.venv
        location, label, stop = self.codec.decode(self._actions)
        res = venv._step_core(location, label, stop, None)
        obs = _to_numpy(res.obs)
        rewards = res.reward.cpu().numpy().astype(np.float32)
        self._returns += rewards
        self._lengths += 1
        dones = res.terminated.cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            slots = res.terminated.nonzero()[:, 0]
            right = (venv.core.predictions == venv.core.labels).float().mean(1).cpu()
            new_obs = _to_numpy(venv._reset_slots(slots))
            for i in slots.tolist():
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in obs.items()}
                infos[i]["episode"] = {
                    "r": float(self._returns[i]),
                    "l": int(self._lengths[i]),
                    "correct": float(right[i]),
                }
                infos[i]["TimeLimit.truncated"] = False
            self._returns[dones] = 0
            self._lengths[dones] = 0
            obs = new_obs
        return obs, rewards, dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*args, **kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self):
        return [self.venv.render()] if self.venv.render_mode else [None]
