"""``GlimpseEnv``: the single-episode Gymnasium face of the batched glimpse MDP."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.core import ActionError, GlimpseMDP, MDPConfig
from envs.spaces import ActionCodec, action_space, check_action_keys, describe, observation_space
from glimpse.data.source import ImageSource
from glimpse.training import resolve_device

__all__ = ["FlattenActionWrapper", "GlimpseEnv"]


class GlimpseEnv(gym.Env):
    """Classify an image by taking glimpses at locations of your choice.

    ## Description
    Recurrent Models of Visual Attention (Mnih et al. 2014): an image is drawn from a
    dataset; the agent sees a foveated multi-scale glimpse (``k`` patches of ``g x g``,
    the ``i``-th covering ``g * s**i`` pixels, area-averaged; :mod:`glimpse.retina`) at
    its current location, picks the next location, and after ``T`` glimpses names the
    class. With ``num_targets > 1`` (MultiMNIST, Ba et al. 2015) it names each object in
    turn, left to right, ``T`` glimpses each. This env is a view over the batched core
    :class:`envs.core.GlimpseMDP` with a batch of one; :class:`envs.GlimpseVectorEnv` is
    the fast face.

    **Part localization** (``num_parts = K >= 1``; Liu et al. 2016, "Fully Convolutional
    Attention Networks for Fine-Grained Recognition", FCAN): the agent sees the whole
    image at low resolution (``context``) and names ``K`` part locations at once; it then
    sees the ``K`` high-resolution part crops (``glimpse``) and classifies. With ``S``
    part-selection steps, ``num_glimpses = S + 1`` (the reset glimpse counts).
    Registered as ``Glimpse/TwoDigitParts-v0`` (100 classes, ``K = 2``).

    ## Action Space
    ``Dict(location=Box(-b, b, (2,)), label=Discrete(num_classes)[, stop=Discrete(2)])``:
    the next fixation ``(x, y)`` (``b = 1`` for absolute locations, ``(-1, -1)`` the
    top-left corner; ``b = max_step`` for relative moves), the class (read only on a
    classifying step), and, with ``early_stop``, "classify now". ``location`` and ``label``
    are required on every step, ``stop`` may be left out (0). Out-of-range locations
    raise, unless ``clip_actions=True``. A missing or unknown key, or a value of the wrong
    shape, type or range raises :class:`envs.ActionError` (a ``ValueError``) with a
    one-line message naming it, and leaves the env unchanged. For stable-baselines3, wrap
    with :class:`FlattenActionWrapper`. Parts mode: ``location=Box(-b, b, (K, 2))``, all
    ``K`` parts of the step at once.

    ## Observation Space
    ``Dict(glimpse=Box(0, 1, (k, C, g, g)), location=Box(-1, 1, (2,)),
    step=Box(0, 1, (1,)))``: the glimpse at the current location, that location, and the
    glimpses taken so far over ``num_targets * T``; with ``context_size = s``,
    ``context=Box(0, 1, (C, s, s))``, the whole image area-averaged. Parts mode:
    ``glimpse=Box(0, 1, (K, k, C, g, g))`` (one crop per part), ``location=Box(-1, 1,
    (K, 2))``, the ``context`` view (required), and ``history=Box(-1, 1, (num_targets *
    T, K, 2))``: the part locations chosen so far (rows past ``step`` are zero).

    ## Rewards
    1 for each correctly classified target, 0 for a wrong one; ``step_reward``
    (default 0) on every other step.

    Parts mode uses the same rewards. FCAN's *greedy* reward (each step's parts are paid
    by the gain in the correct class's confidence they bring) needs the classifier's
    confidences, which live in the agent, not in the MDP: it is computed by the agent's
    trainer from its own class probabilities and the label that ``info`` reports
    (:func:`agents.parts.greedy_rewards`); the env pays only the classification.

    ## Starting State
    The first glimpse is at the centre (``init_location="center"``) or uniformly random
    in ``[-1, 1]^2`` (``"random"``); ``reset(options={"index": i, "init_loc": (x, y)})``
    chooses the image and the location.

    ## Episode End
    Terminated after the last target is classified: after exactly ``num_targets * T``
    steps without early stopping. Never truncated.

    ## Arguments
    ``source`` (dataset name from ``glimpse.data.DATASETS``, a dataset, or
    ``(images, labels)``), ``split``, ``data_root``, ``dataset_kwargs``, ``device`` and the
    :class:`envs.core.MDPConfig` fields as keyword arguments (``glimpse_size``,
    ``num_scales``, ``scale_factor``, ``num_glimpses``, ``num_classes``, ``num_targets``,
    ``init_location``, ``relative``, ``max_step``, ``clip_actions``, ``step_reward``,
    ``early_stop``, ``context_size``, ``num_parts``); ``render_mode="rgb_array"``.
    ``device`` is ``"cpu"``, ``"cuda[:N]"`` or ``"auto"`` (``glimpse.training.resolve_device``;
    CUDA requested without CUDA is a ``ValueError``).

    ## Info
    ``label`` and ``index`` (dataset index) at every step; on a classifying step
    ``prediction``, ``correct`` and ``target``; at the end ``episode_correct``.

    ## Version History
    * v0: initial version (``num_parts`` added later, default 0: unchanged behaviour).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
        source: Any = "mnist",
        *,
        split: str = "train",
        data_root: str | None = None,
        dataset_kwargs: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
        render_mode: str | None = None,
        **config: Any,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        device = resolve_device(str(device))
        self.source = ImageSource.from_any(source, split, data_root, device, dataset_kwargs)
        config.setdefault("num_targets", self.source.num_targets)
        try:
            self.config = MDPConfig(**config)
        except TypeError as err:
            raise TypeError(f"GlimpseEnv got an unknown argument: {err}") from None
        self.core = GlimpseMDP(self.config, 1, device)
        self.observation_space = observation_space(self.config, self.source.image_shape[0])
        self.action_space = action_space(self.config)
        self.render_mode = render_mode
        self.index = 0

    def _info(self) -> dict[str, Any]:
        label = self._label if isinstance(self._label, int) else self._label.copy()
        return {"label": label, "index": self.index}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"index", "init_loc"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; valid: index, init_loc")
        n = len(self.source)
        index = options.get("index")
        if index is None:
            index = int(self.np_random.integers(n))
        elif not (isinstance(index, (int, np.integer)) and 0 <= index < n):
            raise ValueError(f"options['index'] must be an int in [0, {n}), got {index!r}")
        init_loc = options.get("init_loc")
        if init_loc is None and self.config.init_location == "random":
            init_loc = self.np_random.uniform(-1, 1, size=2)
        if init_loc is None:
            init_loc = np.zeros(2)
        index = int(index)
        images, labels = self.source.get(slice(index, index + 1))
        obs = self.core.reset_one(images, labels, np.asarray(init_loc, dtype=np.float32))
        self.index = index
        labels = self.core.labels[0].cpu().numpy().copy()  # not a view of the live state
        self._label: int | np.ndarray = int(labels[0]) if len(labels) == 1 else labels
        return obs, self._info()

    def step(
        self, action: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        cfg = self.config
        check_action_keys(action, cfg)
        raw = action["location"]
        location = _as_array(raw)
        if location is None or location.shape != cfg.loc_shape:
            want = f"{cfg.num_parts} (x, y) pairs" if cfg.num_parts else "2 numbers (x, y)"
            raise ActionError(
                f"action['location'] must be {want}, shape {cfg.loc_shape}, got {describe(raw)}"
                + ("" if location is None else f" of shape {location.shape}")
            )
        if location.dtype.kind != "f":
            raise ActionError(
                f"action['location'] must be floating point, got {location.dtype}: {describe(raw)}"
            )
        raw = action["label"]
        label = _as_array(raw)
        if (
            label is None
            or label.shape not in ((), (1,))
            or label.dtype.kind not in "iu"  # not np.integer: timedelta64 is one
        ):
            raise ActionError(
                f"action['label'] must be one integer class index in [0, {cfg.num_classes}), "
                f"got {describe(raw)}"
            )
        if not -(2**63) <= int(label.reshape(())) < 2**63:  # would wrap around as int64
            raise ActionError(
                f"action['label'] must be a class index in [0, {cfg.num_classes}), "
                f"got {int(label.reshape(()))}"
            )
        raw = action.get("stop", 0)
        stop = _as_array(raw)
        if stop is None or stop.shape not in ((), (1,)) or stop.dtype.kind not in "biu":
            raise ActionError(f"action['stop'] must be one 0/1 value, got {describe(raw)}")
        if not -(2**63) <= int(stop.reshape(())) < 2**63:
            raise ActionError(f"action['stop'] must be one 0/1 value, got {describe(raw)}")
        res = self.core.step_one(location, int(label.reshape(())), int(stop.reshape(())))
        info = self._info()
        if res.classified:
            info.update(prediction=res.prediction, correct=res.correct, target=res.target)
        if res.terminated:
            info["episode_correct"] = res.episode_correct
        return res.obs, res.reward, res.terminated, False, info

    def render(self) -> np.ndarray | None:
        """The image with the trajectory so far (``glimpse.viz``): ``(H', W', 3)`` uint8."""
        if self.render_mode is None:
            return None
        from glimpse.viz import render_trajectory

        cfg = self.config
        label = int(self.core.labels[0, 0]) if cfg.num_targets == 1 else None
        frames = render_trajectory(
            self.core.images[0].cpu(),
            self.core.trajectory(0).reshape(-1, 2),  # parts mode: every part in turn
            cfg.glimpse_size,
            cfg.num_scales,
            cfg.scale_factor,
            label=label,
        )
        return frames[-1]


def _as_array(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array, or ``None`` when numpy cannot make a regular one."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError):  # ragged nested lists, objects numpy refuses
        return None


class FlattenActionWrapper(gym.ActionWrapper):
    """Flat, stable-baselines3-ready actions for :class:`GlimpseEnv` (or a wrapper of it).

    ``mode="multidiscrete"`` (``PPO``, ``A2C``, ``RecurrentPPO``) or ``"box"`` (also ``SAC``,
    ``TD3``, ``DDPG``, ``TQC``); see :class:`envs.spaces.ActionCodec` for the encodings.
    """

    def __init__(self, env: gym.Env, mode: str = "multidiscrete", grid_size: int = 9) -> None:
        super().__init__(env)
        self.codec = ActionCodec(env.unwrapped.config, mode, grid_size)
        self.action_space = self.codec.space

    def action(self, action: np.ndarray) -> dict[str, Any]:
        location, label, stop = self.codec.decode(np.asarray(action)[None])
        out: dict[str, Any] = {
            "location": location[0].numpy().astype(np.float32),
            "label": np.int64(label[0]),
        }
        if self.unwrapped.config.early_stop:
            out["stop"] = np.int64(stop[0])
        return out
