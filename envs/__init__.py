"""Glimpse-taking MDPs behind the Gymnasium API (one batched core, two faces).

Importing this package registers every task of :data:`glimpse.tasks.TASKS` (the one task
table) under the ``Glimpse/`` namespace, for
``gymnasium.make`` (single episode, :class:`GlimpseEnv`) and ``gymnasium.make_vec``
(batched, :class:`GlimpseVectorEnv`). Keyword arguments override any default::

    import gymnasium as gym
    import envs  # registers Glimpse/*

    env = gym.make("Glimpse/ClutteredMNIST60-v0", data_root="../shared/data")
    venv = gym.make_vec("Glimpse/MNIST-v0", num_envs=256, device="cuda")

| id | data | glimpses ``T`` | ``g`` | scales ``k`` |
|---|---|---|---|---|
| ``Glimpse/MNIST-v0`` | 28x28 MNIST | 6 | 8 | 1 |
| ``Glimpse/TranslatedMNIST60-v0`` | digit on a 60x60 canvas | 8 | 12 | 3 |
| ``Glimpse/ClutteredMNIST60-v0`` | 60x60, 4 clutter patches 8x8 | 8 | 12 | 3 |
| ``Glimpse/ClutteredMNIST100-v0`` | 100x100, 8 clutter patches 8x8 | 8 | 12 | 4 |
| ``Glimpse/MultiMNIST-v0`` | 2 digits on 100x100, left to right; 25x25 context | 8 each | 12 | 4 |
| ``Glimpse/DRAMPairsMNIST-v0`` | 2 digits, 8 distractors on 100x100, 55 pair classes | 4 | 12 | 4 |
| ``Glimpse/DRAMAdditionMNIST-v0`` | the same images, 19 classes (the sum) | 4 | 12 | 4 |
| ``Glimpse/STNClutteredMNIST60-v0`` | 60x60, 8 clutter patches 6x6 (STN paper) | 8 | 12 | 3 |
| ``Glimpse/TwoDigit100-v0`` | 2 digits, 8 clutter, 100 classes ``10 * left + right`` | 8 | 12 | 4 |
| ``Glimpse/TwoDigitParts-v0`` | 2 digits, 8 clutter, 100 classes; K=2 parts | 2 | 28 | 2 |

The defaults are those of Mnih et al. (2014) (scale factor 2); MultiMNIST follows Ba et
al. (2015) with a reward per correct digit. DRAMPairsMNIST and DRAMAdditionMNIST are our
reading of the MNIST tasks of Ba et al. (2015) (one label per image: the unordered pair,
or the sum), STNClutteredMNIST60 of the cluttered MNIST of Jaderberg et al. (2015) with
cluttered60's glimpse settings; their recipes are unverified (:mod:`glimpse.data.pairs`,
:mod:`glimpse.data.registry`). TwoDigitParts is the part-localization task of
FCAN (Liu et al. 2016): one step names both part locations at once from the 25x25 whole
image, the next classifies from the two part crops (28x28 at full resolution, 56x56 at
half). TwoDigit100 is the same 100-class two-digit proxy
(:class:`glimpse.data.TwoDigitMNIST`) as a one-location task for RAM and DRAM, with
ClutteredMNIST100's glimpse settings (same 100x100 canvas); it lives in
:data:`PROXY_TASKS`, not :data:`TASKS` (the papers' tasks).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.core import ActionError, GlimpseMDP, MDPConfig
from envs.single import FlattenActionWrapper, GlimpseEnv
from envs.spaces import ActionCodec
from envs.vector import GlimpseVectorEnv
from glimpse.data.source import ImageSource
from glimpse.tasks import tasks_of

__all__ = [
    "PART_TASKS",
    "PROXY_TASKS",
    "TASKS",
    "ActionCodec",
    "ActionError",
    "FlattenActionWrapper",
    "GlimpseEnv",
    "GlimpseMDP",
    "GlimpseVectorEnv",
    "ImageSource",
    "MDPConfig",
    "make_vector_env",
]

TASKS: dict[str, dict[str, Any]] = {t.env_id: t.env_kwargs() for t in tasks_of("paper")}
"""Registered task ids and their default keyword arguments (one location per step): the
``paper`` tasks of :data:`glimpse.tasks.TASKS`."""

PROXY_TASKS: dict[str, dict[str, Any]] = {t.env_id: t.env_kwargs() for t in tasks_of("proxy")}
"""Registered one-location tasks beyond the papers' (kept out of :data:`TASKS`, whose
entries follow the papers): the FCAN proxy for RAM and DRAM."""

PART_TASKS: dict[str, dict[str, Any]] = {t.env_id: t.env_kwargs() for t in tasks_of("parts")}
"""Registered part-localization tasks (parts mode, ``num_parts = K``; FCAN, Liu et al. 2016)."""

_ENV_KEYS = {"source", "split", "data_root", "dataset_kwargs", "device", "render_mode"}


def make_vector_env(num_envs: int = 64, **kwargs: Any) -> GlimpseVectorEnv:
    """Build a :class:`GlimpseVectorEnv` from flat keyword arguments (``gym.make_vec``'s
    entry point): env arguments plus :class:`MDPConfig` fields."""
    env_kwargs = {
        k: v
        for k, v in kwargs.items()
        if k in _ENV_KEYS | {"shuffle", "array_type", "render_index"}
    }
    cfg_kwargs = {k: v for k, v in kwargs.items() if k not in env_kwargs}
    try:
        config = MDPConfig(**cfg_kwargs)
    except TypeError as err:
        raise TypeError(f"GlimpseVectorEnv got an unknown argument: {err}") from None
    return GlimpseVectorEnv(num_envs=num_envs, config=config, **env_kwargs)


for _task in tasks_of():
    if _task.env_id not in gym.registry:
        gym.register(
            id=_task.env_id,
            entry_point="envs.single:GlimpseEnv",
            vector_entry_point="envs:make_vector_env",
            kwargs=_task.env_kwargs(),
        )
