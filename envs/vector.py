"""``GlimpseVectorEnv``: N glimpse episodes per call over the batched core, and its SB3 face."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from envs.core import ActionError, GlimpseMDP, MDPConfig, StepResult
from envs.spaces import ACTION_KEYS, action_space, check_action_keys, describe, observation_space
from glimpse.checks import check_positive_int
from glimpse.data.source import ImageSource, IndexStream
from glimpse.training import resolve_device

__all__ = ["Episodes", "GlimpseVectorEnv"]


class Episodes(NamedTuple):
    """The episodes a :class:`GlimpseVectorEnv` is playing (:meth:`GlimpseVectorEnv.episodes`)."""

    images: Tensor
    """``(n, C, H, W)`` the images, as the env holds them (uint8 or float in ``[0, 1]``)."""
    labels: Tensor
    """``(n, L)`` long: the true labels (``L = num_targets``)."""
    fixations: Tensor
    """``(n, max_steps, 2)`` (``(n, max_steps, K, 2)`` in parts mode): the glimpse centres
    ``(x, y)`` in ``[-1, 1]`` in the order taken; rows past the steps taken are zero."""


def _as_tensor(value: Any) -> Tensor | None:
    """``None`` stays ``None``; tensors pass through; anything else goes via numpy."""
    if value is None or isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if not array.dtype.isnative:  # e.g. big-endian floats: torch reads native order only
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.as_tensor(array)


def _action_tensor(actions: dict[str, Any], key: str) -> Tensor | None:
    """``actions[key]`` as a tensor (``None`` if absent); ActionError if it is not numeric."""
    if key not in actions:
        return None
    value = actions[key]
    try:
        if value is not None:
            return _as_tensor(value)
    except (TypeError, ValueError, RuntimeError):  # strings, ragged lists, objects
        pass
    raise ActionError(
        f"actions[{key!r}] must be a tensor or array of numbers, got {describe(value)}"
    )


class GlimpseVectorEnv(VectorEnv):
    """``num_envs`` glimpse episodes stepped together, as tensors on one device.

    A ``gymnasium.vector.VectorEnv`` over :class:`envs.core.GlimpseMDP`: one batched call
    per step, no sub-env objects, no processes. Images are drawn from ``source`` in
    shuffled epochs (``shuffle=True``) or in order (``shuffle=False``: with
    ``num_envs`` episodes per reset, a sequential pass visits every image once, which is
    what evaluation wants).

    **Autoreset** follows Gymnasium 1.x ``AutoresetMode.NEXT_STEP`` (the default mode):
    when a sub-env's episode ends on step ``t``, step ``t + 1`` ignores that sub-env's
    action, starts a new episode there and returns its first observation with reward 0
    and ``terminated = truncated = False``.

    **Observations and actions** are torch tensors on ``device`` by default
    (``array_type="torch"``), the fast path for torch agents; ``array_type="numpy"``
    gives numpy arrays. Actions: a dict with ``location`` ``(N, 2)`` float (``(N, K, 2)``
    in parts mode, ``num_parts = K``), ``label`` ``(N,)`` int and, with ``early_stop``,
    ``stop`` ``(N,)`` bool. ``location`` and ``label`` are required on every step,
    ``stop`` may be left out. A missing or unknown key, or a value of the wrong shape,
    type or range raises :class:`envs.ActionError` (a ``ValueError``) with a one-line
    message, and leaves every sub-env unchanged.

    **Info** (Gymnasium vector convention, ``_key`` masks): ``label`` ``(N,)`` (or
    ``(N, num_targets)``), ``index`` (dataset index), ``prediction``/``correct``/``target``
    where a target was classified this step, ``episode_correct`` (fraction of targets
    right) where an episode ended.

    Args:
        source: a dataset name (``glimpse.data.DATASETS``), a dataset with ``.data`` and
            ``.targets``, an ``(images, labels)`` pair or an :class:`ImageSource`.
        num_envs: ``N``.
        config: the MDP's parameters (:class:`envs.core.MDPConfig`).
        split, data_root, dataset_kwargs: passed to ``glimpse.data.get_dataset`` for names.
        device: where images, state and glimpses live: ``"cpu"``, ``"cuda[:N]"`` or
            ``"auto"`` (``glimpse.training.resolve_device``).
        shuffle: draw images in shuffled epochs (else in order).
        array_type: ``"torch"`` or ``"numpy"``.
        render_index: the sub-env that :meth:`render` draws.
    """

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 2,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        source: Any = "mnist",
        num_envs: int = 64,
        config: MDPConfig | None = None,
        *,
        split: str = "train",
        data_root: str | None = None,
        dataset_kwargs: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        array_type: str = "torch",
        render_mode: str | None = None,
        render_index: int = 0,
    ) -> None:
        if array_type not in ("torch", "numpy"):
            raise ValueError(f"array_type must be 'torch' or 'numpy', got {array_type!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        check_positive_int("num_envs", num_envs)
        self.device = resolve_device(str(device))
        self.source = ImageSource.from_any(source, split, data_root, self.device, dataset_kwargs)
        cfg = config or MDPConfig()
        if cfg.num_targets != self.source.num_targets:
            raise ValueError(
                f"config.num_targets={cfg.num_targets} but the dataset has "
                f"{self.source.num_targets} label(s) per image"
            )
        self.config = cfg
        self.num_envs = num_envs
        self.core = GlimpseMDP(cfg, num_envs, self.device)
        self.stream = IndexStream(len(self.source), shuffle=shuffle)
        self.array_type = array_type
        self.render_mode = render_mode
        if not 0 <= render_index < num_envs:
            raise ValueError(f"render_index must be in [0, {num_envs}), got {render_index}")
        self.render_index = render_index
        channels = self.source.image_shape[0]
        self.single_observation_space = observation_space(cfg, channels)
        self.single_action_space = action_space(cfg)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.indices = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._needs_reset = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._generator = torch.Generator()
        self._started = False

    # ----------------------------------------------------------------- engine
    def _reset_slots(
        self, slots: Tensor | None, init_loc: Tensor | None = None, indices: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Start new episodes in ``slots`` (all if None) with the next images of the stream."""
        n = self.num_envs if slots is None else int(slots.numel())
        if indices is None:
            indices = self.stream.next(n)
        indices = torch.as_tensor(indices, dtype=torch.long).to(self.device)
        if indices.shape != (n,) or (indices < 0).any() or (indices >= len(self.source)).any():
            raise ValueError(
                f"indices must be {n} dataset indices in [0, {len(self.source)}), "
                f"got {indices.tolist()}"
            )
        images, labels = self.source.get(indices)
        obs = self.core.reset(images, labels, slots, init_loc, self._generator)
        if slots is None:
            self.indices = indices.clone()
        else:
            self.indices[slots] = indices
        return obs

    def _seed(self, seed: int | None) -> None:
        """Restart the image stream and the location generator from ``seed``.

        Without a seed, only the first reset draws fresh randomness; later resets go on.
        """
        if seed is not None or not self._started:
            self.stream.seed(seed)
            if seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(int(seed) + 1)
        self._started = True

    def _decode(self, actions: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
        check_action_keys(actions, self.config, self.num_envs)
        location, label, stop = (_action_tensor(actions, k) for k in ACTION_KEYS)
        return location, label, stop

    def _step_core(
        self, location: Tensor, label: Tensor | None, stop: Tensor | None, active: Tensor | None
    ) -> StepResult:
        return self.core.step(location, label, stop, active)

    def _info(self, res: StepResult | None) -> dict[str, Any]:
        n, dev = self.num_envs, self.device
        labels = self.core.labels[:, 0] if self.config.num_targets == 1 else self.core.labels
        every = torch.ones(n, dtype=torch.bool, device=dev)
        info: dict[str, Any] = {
            "label": labels.clone(),
            "_label": every,
            "index": self.indices.clone(),
            "_index": every,
        }
        if res is not None:
            cls = res.classified
            info.update(
                prediction=res.prediction,
                _prediction=cls,
                correct=res.correct,
                _correct=cls,
                target=res.target,
                _target=cls,
            )
            ended = res.terminated
            hits = self.core.predictions == self.core.labels
            # One target: the mean of one column is that column, bit for bit.
            right = hits[:, 0].float() if hits.shape[1] == 1 else hits.float().mean(1)
            info.update(episode_correct=right, _episode_correct=ended)
        return info

    def _out(self, value: Any) -> Any:
        if self.array_type == "torch":
            return value
        if isinstance(value, dict):
            return {k: self._out(v) for k, v in value.items()}
        if isinstance(value, Tensor):
            return value.detach().cpu().numpy()
        return value

    # ------------------------------------------------------------- Gymnasium
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start ``num_envs`` new episodes.

        ``seed`` restarts the image stream and the initial-location generator (a list of
        seeds uses its first entry). Like :meth:`GlimpseEnv.reset`, a seed is an int >= 0
        or ``None`` (else ``gymnasium.error.Error``, Gymnasium's own rule and message).
        ``options``: ``indices`` (``(N,)`` dataset indices to use instead of the stream) and
        ``init_loc`` (``(N, 2)``).
        """
        if isinstance(seed, (list, tuple)):
            for s in seed:  # every entry obeys the rule below, though only the first is used
                seeding.np_random(s)
            seed = seed[0] if seed else None
        options = options or {}
        unknown = set(options) - {"indices", "init_loc"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; valid: indices, init_loc")
        # Gymnasium's seeding rule and message, exactly as GlimpseEnv.reset: an int >= 0 or None.
        super().reset(seed=seed)
        self._seed(seed)
        init_loc = options.get("init_loc")
        if init_loc is not None:
            init_loc = _as_tensor(init_loc).float()
        obs = self._reset_slots(None, init_loc, options.get("indices"))
        self._needs_reset.zero_()
        return self._out(obs), self._out(self._info(None))

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """One step of every sub-env (NEXT_STEP autoreset; see the class docstring)."""
        location, label, stop = self._decode(actions)
        resetting = self._needs_reset
        count = int(resetting.sum())  # sub-envs starting a new episode on this step
        if count < self.num_envs:  # None: every sub-env steps (no mask to apply)
            res = self._step_core(location, label, stop, ~resetting if count else None)
        else:
            res = None
        if count:
            obs = self._reset_slots(resetting.nonzero()[:, 0])
        else:
            obs = res.obs
        n, dev = self.num_envs, self.device
        if res is None:
            reward = torch.zeros(n, device=dev)
            terminated = torch.zeros(n, dtype=torch.bool, device=dev)
        else:
            reward, terminated = res.reward, res.terminated
        self._needs_reset = terminated.clone()
        truncated = torch.zeros(n, dtype=torch.bool, device=dev)
        info = self._info(res)
        return (
            self._out(obs),
            self._out(reward),
            self._out(terminated),
            self._out(truncated),
            self._out(info),
        )

    def episodes(self, n: int | None = None) -> Episodes:
        """What the first ``n`` sub-envs (all if ``None``) are playing, as copies (not views
        of the live state): their images, labels and the fixations taken so far.

        The public way to see the episodes from outside the engine (e.g. to draw them with
        :func:`glimpse.viz.render_fixations`); see :class:`Episodes` for the shapes.
        """
        n = self.num_envs if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= self.num_envs:
            raise ValueError(f"n must be an int in [1, {self.num_envs}], got {n!r}")
        core = self.core
        return Episodes(core.images[:n].clone(), core.labels[:n].clone(), core.history[:n].clone())

    def render(self) -> np.ndarray | None:
        """RGB frame of sub-env ``render_index``: its image with the trajectory so far."""
        if self.render_mode is None:
            return None
        from glimpse.viz import render_trajectory

        i = self.render_index
        cfg = self.config
        frames = render_trajectory(
            self.core.images[i].cpu(),
            self.core.trajectory(i).reshape(-1, 2),  # parts mode: every part in turn
            cfg.glimpse_size,
            cfg.num_scales,
            cfg.scale_factor,
            label=self.core.labels[i, 0].item() if cfg.num_targets == 1 else None,
        )
        return frames[-1]

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release: no sub-processes or files."""
