"""Observation and action spaces of the glimpse MDP, and their flat, SB3-ready encodings.

The native action is a ``Dict``: ``location`` (``Box``), ``label`` (``Discrete``) and, with
``early_stop``, ``stop`` (``Discrete(2)``). Stable-baselines3 has no ``Dict`` action
spaces, so :class:`ActionCodec` maps flat actions to native ones:

- ``mode="multidiscrete"``: ``MultiDiscrete([G, G, num_classes(, 2)])``, the location being
  the centre of cell ``(i, j)`` of a ``G x G`` grid over the location box. Works with SB3
  ``PPO`` and ``A2C`` and sb3-contrib ``RecurrentPPO``.
- ``mode="box"``: ``Box(-1, 1, (2 + num_classes (+1),))``: the first two entries are the
  location (scaled by the location bound), the label is the argmax of the next
  ``num_classes`` entries, ``stop`` is the sign of the last. Works with every SB3
  algorithm for continuous actions: ``PPO``, ``A2C``, ``SAC``, ``TD3``, ``DDPG`` and
  ``RecurrentPPO``/``TQC`` from sb3-contrib.

In parts mode (``num_parts = K``; FCAN, Liu et al. 2016) the location is ``K`` locations:
``MultiDiscrete([G, G] * K + [num_classes(, 2)])`` or ``Box(-1, 1, (2K + num_classes (+1),))``
with the ``K`` ``(x, y)`` pairs first, decoded to ``(B, K, 2)``.

The same codec serves the single-env wrapper (:class:`envs.FlattenActionWrapper`) and the
SB3 ``VecEnv`` adapter, so both faces decode actions identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from envs.core import ActionError, MDPConfig

__all__ = ["ActionCodec", "action_space", "check_action_keys", "describe", "observation_space"]

ACTION_KEYS = ("location", "label", "stop")
"""Keys of a native action dict; ``location`` and ``label`` are required, ``stop`` is
optional (0 when left out; anything but 0 needs ``early_stop=True``)."""


def describe(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, at most ``limit`` characters, for error messages."""
    try:
        text = " ".join(repr(value).split())
    except Exception:  # a repr that raises must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_action_keys(action: Any, cfg: MDPConfig, batch: int | None = None) -> None:
    """Raise :class:`~envs.core.ActionError` unless ``action`` is a dict holding
    ``location`` and ``label``, optionally ``stop``, and nothing else (:data:`ACTION_KEYS`).

    ``batch`` is ``None`` for one episode's action (:class:`envs.GlimpseEnv`), else the
    number of episodes ``N`` of a batched one (:class:`envs.GlimpseVectorEnv`); it only
    changes the shapes the message names.
    """
    if isinstance(action, Mapping) and "location" in action and "label" in action:
        unknown = [k for k in action if k not in ACTION_KEYS]
        if not unknown:
            return  # the common case: no message to build
    name = "action" if batch is None else "actions"
    loc = (*(() if batch is None else (batch,)), *cfg.loc_shape)
    label = f"({batch},) ints" if batch is not None else "an int"
    want = (
        f"{name} must be a dict with 'location': {loc} floats, 'label': {label} in "
        f"[0, {cfg.num_classes})" + (" and optionally 'stop': 0/1" if cfg.early_stop else "")
    )
    if not isinstance(action, Mapping):
        raise ActionError(f"{want}; got {type(action).__name__} {describe(action)}")
    missing = [k for k in ACTION_KEYS[:2] if k not in action]
    if missing:
        keys = describe([*action])
        raise ActionError(f"{want}; {' and '.join(map(repr, missing))} missing (keys {keys})")
    unknown = [k for k in action if k not in ACTION_KEYS]
    if unknown:
        raise ActionError(f"{want}; got unknown key(s) {describe(unknown)}")


def observation_space(cfg: MDPConfig, channels: int) -> spaces.Dict:
    """``Dict(glimpse=(k, C, g, g) in [0, 1], location=(2,) in [-1, 1], step=(1,) in [0, 1])``,
    plus ``context=(C, s, s)`` in [0, 1] when ``context_size = s > 0``. In parts mode
    (``num_parts = K``) ``glimpse`` is ``(K, k, C, g, g)``, ``location`` ``(K, 2)``, and
    ``history=(max_steps, K, 2)`` in [-1, 1] holds the fixations so far."""
    k, g = cfg.num_scales, cfg.glimpse_size
    lead = (cfg.num_parts,) if cfg.num_parts else ()
    parts = {
        "glimpse": spaces.Box(0.0, 1.0, (*lead, k, channels, g, g), np.float32),
        "location": spaces.Box(-1.0, 1.0, cfg.loc_shape, np.float32),
        "step": spaces.Box(0.0, 1.0, (1,), np.float32),
    }
    if cfg.context_size:
        s = cfg.context_size
        parts["context"] = spaces.Box(0.0, 1.0, (channels, s, s), np.float32)
    if cfg.num_parts:
        parts["history"] = spaces.Box(-1.0, 1.0, (cfg.max_steps, cfg.num_parts, 2), np.float32)
    return spaces.Dict(parts)


def action_space(cfg: MDPConfig) -> spaces.Dict:
    """The native ``Dict`` action space (see the module docstring)."""
    bound = cfg.location_bound
    parts: dict[str, spaces.Space] = {
        "location": spaces.Box(-bound, bound, cfg.loc_shape, np.float32),
        "label": spaces.Discrete(cfg.num_classes),
    }
    if cfg.early_stop:
        parts["stop"] = spaces.Discrete(2)
    return spaces.Dict(parts)


@dataclass(frozen=True)
class ActionCodec:
    """Flat SB3-compatible actions <-> native ``(location, label, stop)`` batches.

    Args:
        config: the MDP configuration (classes, early stop, location bound).
        mode: ``"multidiscrete"`` or ``"box"`` (module docstring).
        grid_size: ``G``, cells per axis in ``multidiscrete`` mode.
    """

    config: MDPConfig
    mode: Literal["multidiscrete", "box"] = "multidiscrete"
    grid_size: int = 9

    def __post_init__(self) -> None:
        if self.mode not in ("multidiscrete", "box"):
            raise ValueError(f"mode must be 'multidiscrete' or 'box', got {self.mode!r}")
        if not isinstance(self.grid_size, int) or self.grid_size < 2:
            raise ValueError(f"grid_size must be an int >= 2, got {self.grid_size!r}")

    @property
    def _parts(self) -> int:
        """Location pairs per action: ``K`` in parts mode, else 1."""
        return self.config.num_parts or 1

    def _shape_location(self, xy: Tensor) -> Tensor:
        """``(B, 2K)`` flat pairs -> ``(B, 2)`` or, in parts mode, ``(B, K, 2)``."""
        return xy.reshape(len(xy), self.config.num_parts, 2) if self.config.num_parts else xy

    @property
    def space(self) -> spaces.Space:
        """The flat action space of one episode."""
        cfg = self.config
        if self.mode == "multidiscrete":
            nvec = [self.grid_size, self.grid_size] * self._parts + [cfg.num_classes]
            return spaces.MultiDiscrete(nvec + ([2] if cfg.early_stop else []))
        n = 2 * self._parts + cfg.num_classes + (1 if cfg.early_stop else 0)
        return spaces.Box(-1.0, 1.0, (n,), np.float32)

    def decode(self, actions: Tensor | np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, D)`` flat actions -> ``location (B, 2)`` (parts mode ``(B, K, 2)``),
        ``label (B,)``, ``stop (B,)``."""
        cfg = self.config
        a = torch.as_tensor(np.asarray(actions) if not isinstance(actions, Tensor) else actions)
        want = self.space.shape[0]
        if a.ndim != 2 or a.shape[1] != want:
            raise ValueError(f"flat actions must have shape (B, {want}), got {tuple(a.shape)}")
        bound = cfg.location_bound
        if self.mode == "multidiscrete":
            if a.is_floating_point():
                bad = ~torch.isfinite(a) | (a != a.round())
                if bad.any():
                    i, j = (int(v) for v in bad.nonzero()[0])
                    raise ValueError(
                        f"multidiscrete actions must be whole numbers, got {a[i, j].item()} "
                        f"at [{i}, {j}]"
                    )
            a = a.long()
            hi = torch.as_tensor(self.space.nvec)
            if ((a < 0) | (a >= hi)).any():
                raise ValueError(f"multidiscrete action out of range {hi.tolist()}: {a.tolist()}")
            m = 2 * self._parts
            centres = (a[:, :m].float() + 0.5) / self.grid_size * 2 - 1
            location = self._shape_location(centres * bound)
            label = a[:, m]
            stop = a[:, m + 1].bool() if cfg.early_stop else torch.zeros(len(a), dtype=torch.bool)
            return location, label, stop
        a = a.float()
        if not torch.isfinite(a).all():
            raise ValueError(f"box actions must be finite, got {a.tolist()}")
        m = 2 * self._parts
        location = self._shape_location(a[:, :m].clamp(-1, 1) * bound)
        label = a[:, m : m + cfg.num_classes].argmax(1)
        stop = (a[:, -1] > 0) if cfg.early_stop else torch.zeros(len(a), dtype=torch.bool)
        return location, label, stop

    def encode(self, location: Tensor, label: Tensor, stop: Tensor | None = None) -> np.ndarray:
        """Native actions -> the nearest flat actions (``(B, D)`` numpy), for tests and demos."""
        cfg = self.config
        b = location.shape[0]
        bound = cfg.location_bound
        location = location.reshape(b, 2 * self._parts)
        rel = (location.float().clamp(-bound, bound) / bound + 1) / 2  # in [0, 1]
        stop = torch.zeros(b, dtype=torch.long) if stop is None else stop.long()
        if self.mode == "multidiscrete":
            cells = (rel * self.grid_size).floor().clamp(0, self.grid_size - 1).long()
            cols = [cells, label.long()[:, None]] + ([stop[:, None]] if cfg.early_stop else [])
            return torch.cat(cols, 1).numpy()
        onehot = torch.nn.functional.one_hot(label.long(), cfg.num_classes).float() * 2 - 1
        cols = [rel * 2 - 1, onehot] + ([stop[:, None].float() * 2 - 1] if cfg.early_stop else [])
        return torch.cat(cols, 1).numpy().astype(np.float32)
