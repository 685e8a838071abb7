"""The one batched glimpse-MDP engine behind every face of the environment.

Mnih et al. (2014), *Recurrent Models of Visual Attention*, cast classification as a
partially observable MDP: the agent sees a foveated glimpse (:mod:`glimpse.retina`) at the
location it chose, chooses the next location, and after ``T`` glimpses classifies; the
reward is 1 for a correct classification and 0 otherwise. Ba et al. (2015) extend it to
several objects classified in turn (DRAM); here ``num_targets > 1``.

:class:`GlimpseMDP` holds a batch of ``B`` episodes as tensors (CPU or CUDA) and
implements ALL the episode logic -- location bookkeeping, action validation, rewards,
termination -- once. :class:`envs.GlimpseVectorEnv` and :class:`envs.GlimpseEnv` are views
over it (DESIGN.md: "One MDP, two faces").

Episode timeline, for each target ``j = 0..num_targets-1``:

- ``reset`` places the agent at the initial location and returns glimpse 1.
- Each ``step(location, label, stop)`` either *moves* (the glimpse at ``location`` is
  returned; reward ``step_reward``) or *classifies* target ``j``: that happens on the step
  after the ``T``-th glimpse of the target, or earlier when ``stop`` is set (only if the
  MDP was built with ``early_stop=True``). A classification reads ``label``, pays 1 if it
  equals the true label (0 otherwise), and then either ends the episode (last target) or
  moves to ``location`` and starts the next target with that glimpse.

So an episode of one target has exactly ``T`` steps and ``T`` glimpses; the ``location``
of the final step is unused. Episodes are never truncated.

**Parts mode** (``num_parts = K >= 1``; Liu et al. 2016, *Fully Convolutional Attention
Networks for Fine-Grained Recognition*, FCAN): every fixation is ``K`` part locations at
once. Locations are ``(B, K, 2)``, each observation holds the ``K`` glimpses ``(B, K, k,
C, g, g)``, the coarse whole image (``context``; required) and ``history`` ``(B,
max_steps, K, 2)``: every fixation so far (rows past ``step`` are zero). The timeline is
unchanged: ``reset`` fixates all ``K`` parts at the initial location, steps ``1 .. T-1``
choose the parts, step ``T`` classifies; so FCAN with ``S`` part-selection steps is
``num_glimpses = S + 1``. With ``num_parts = 0`` (the default) nothing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from glimpse.checks import check_positive_int
from glimpse.retina import BoxPyramid, IntegralImage, Retina, coarse_view

__all__ = ["ActionError", "GlimpseMDP", "MDPConfig", "OneStep", "StepResult"]


class ActionError(ValueError):
    """An invalid action; the MDP's state is unchanged when this is raised."""


@dataclass(frozen=True)
class MDPConfig:
    """Parameters of a glimpse-taking MDP (defaults: RAM on 28x28 MNIST)."""

    glimpse_size: int = 8
    """``g``: side of each glimpse patch in output pixels."""
    num_scales: int = 1
    """``k``: number of concentric patches per glimpse."""
    scale_factor: float = 2.0
    """``s``: patch ``i`` covers ``g * s**i`` image pixels per side."""
    num_glimpses: int = 6
    """``T``: glimpses per target before the agent must classify."""
    num_classes: int = 10
    """Number of classes of each target."""
    num_targets: int = 1
    """Objects classified in turn in one episode (DRAM's sequence length)."""
    init_location: Literal["center", "random"] = "center"
    """Where the first glimpse is taken, unless ``reset`` is given locations."""
    relative: bool = False
    """If true, location actions are moves relative to the current location."""
    max_step: float = 0.5
    """With ``relative``: the largest move per coordinate (the action space bound)."""
    clip_actions: bool = False
    """If true, out-of-range locations are clipped to the action bounds, not rejected."""
    step_reward: float = 0.0
    """Reward paid on every step that does not classify (shaping; RAM uses 0)."""
    early_stop: bool = False
    """If true, the agent may classify before its ``T``-th glimpse ("classify now")."""
    context_size: int = 0
    """If positive, observations include ``context``: the whole image area-averaged to
    ``context_size x context_size`` (DRAM's coarse view, Ba et al. 2015)."""
    num_parts: int = 0
    """``K``: 0 for one location per step (RAM/DRAM); ``K >= 1`` for parts mode (FCAN,
    Liu et al. 2016): ``K`` part locations per step (module docstring). Needs
    ``context_size > 0``."""
    differentiable: bool = False
    """If true, the glimpses keep the autograd graph of the locations they were taken at
    (the retina's sampling is piecewise linear in the location), so a loss on what the agent
    reads back-propagates into the location network: the ``glimpse-soft`` control (issue
    17). Off (the default), every location is detached on entry, so no graph outlives a
    step. Only what the agent passes in carries a graph: images and labels never do."""

    def __post_init__(self) -> None:
        Retina(self.glimpse_size, self.num_scales, self.scale_factor)  # validates g, k, s
        if (
            not isinstance(self.context_size, int)
            or isinstance(self.context_size, bool)
            or self.context_size < 0
        ):
            raise ValueError(f"context_size must be an int >= 0, got {self.context_size!r}")
        if (
            not isinstance(self.num_parts, int)
            or isinstance(self.num_parts, bool)
            or self.num_parts < 0
        ):
            raise ValueError(f"num_parts must be an int >= 0, got {self.num_parts!r}")
        if self.num_parts and not self.context_size:
            raise ValueError(
                f"num_parts={self.num_parts} (parts mode) needs the whole-image view: "
                "set context_size > 0"
            )
        for name in ("num_glimpses", "num_classes", "num_targets"):
            check_positive_int(name, getattr(self, name))
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.init_location not in ("center", "random"):
            raise ValueError(
                f"init_location must be 'center' or 'random', got {self.init_location!r}"
            )
        if not (isinstance(self.max_step, (int, float)) and 0 < self.max_step <= 2):
            raise ValueError(f"max_step must be in (0, 2], got {self.max_step!r}")
        if not isinstance(self.differentiable, bool):
            raise ValueError(f"differentiable must be a bool, got {self.differentiable!r}")
        if not isinstance(self.step_reward, (int, float)) or not torch.isfinite(
            torch.tensor(float(self.step_reward))
        ):
            raise ValueError(f"step_reward must be a finite number, got {self.step_reward!r}")

    @property
    def retina(self) -> Retina:
        """The retina that takes this MDP's glimpses."""
        return Retina(self.glimpse_size, self.num_scales, self.scale_factor)

    @property
    def max_steps(self) -> int:
        """Steps in an episode without early stopping: ``num_targets * T``."""
        return self.num_targets * self.num_glimpses

    @property
    def loc_shape(self) -> tuple[int, ...]:
        """Shape of one episode's location: ``(2,)``, or ``(K, 2)`` in parts mode."""
        return (self.num_parts, 2) if self.num_parts else (2,)

    @property
    def location_bound(self) -> float:
        """Bound ``b`` of the location action box ``[-b, b]^2``."""
        return float(self.max_step) if self.relative else 1.0


@dataclass
class StepResult:
    """What one batched step returns (tensors on the MDP's device, leading dim ``B``)."""

    obs: dict[str, Tensor]
    reward: Tensor
    """``(B,)`` float32."""
    terminated: Tensor
    """``(B,)`` bool: the episode ended on this step."""
    classified: Tensor
    """``(B,)`` bool: a target was classified on this step."""
    prediction: Tensor
    """``(B,)`` long: the label read on a classifying step, -1 elsewhere."""
    correct: Tensor
    """``(B,)`` bool: the prediction was right (False where nothing was classified)."""
    target: Tensor
    """``(B,)`` long: index of the target classified (or being looked for)."""
    info: dict[str, Tensor] = field(default_factory=dict)


class OneStep(NamedTuple):
    """What :meth:`GlimpseMDP.step_one` returns: one episode's step as numpy and Python values."""

    obs: dict[str, np.ndarray]
    """The observation of :meth:`GlimpseMDP.observe_one` (fresh float32 arrays)."""
    reward: float
    terminated: bool
    classified: bool
    prediction: int
    """The label read on a classifying step, -1 elsewhere."""
    correct: bool
    target: int
    """Index of the target classified (or being looked for)."""
    episode_correct: float | None
    """Where the episode ended: the fraction of its targets classified right; else None."""


class _Transition(NamedTuple):
    classify: Any
    correct: Any
    reward: Any
    prediction: Any
    terminated: Any
    moving: Any
    glimpses: Any
    """Glimpses of the current target after the step."""


def _select(cond: Any, a: Any, b: Any) -> Any:
    """``torch.where(cond, a, b)`` for a mask tensor, ``a if cond else b`` for a bool."""
    return torch.where(cond, a, b) if isinstance(cond, Tensor) else (a if cond else b)


def _transition(
    cfg: MDPConfig, glimpses: Any, target: Any, stop: Any, active: Any, label: Any, true: Any
) -> _Transition:
    """THE episode rule of one step, written once: for ``(B,)`` tensors (the batched path)
    or Python scalars (the batch-of-one path). ``glimpses``: glimpses of the current target
    so far; ``target``: its index; ``stop``, ``active``: bools; ``label``: the label read;
    ``true``: the current target's true label. Only operators that mean the same on bool
    tensors and Python bools (``&``, ``|``, ``^``, comparisons, ``+``, ``*``)."""
    classify = active & ((glimpses >= cfg.num_glimpses) | stop)
    correct = classify & (label == true)
    reward = _select(classify, correct * 1.0, float(cfg.step_reward)) * active
    prediction = _select(classify, label, -1)
    terminated = classify & (target + 1 >= cfg.num_targets)
    moving = active ^ terminated  # ``active & ~terminated``: terminated implies active
    # A classification that does not end the episode moves on: the next target's glimpse 1.
    glimpses = _select(classify, 1, glimpses + moving)
    return _Transition(classify, correct, reward, prediction, terminated, moving, glimpses)


def _next_location(cfg: MDPConfig, loc: Any, action: Any) -> Any:
    """The fixation after a move (tensors or numpy arrays alike): the action itself, or the
    current location plus the action if ``relative``, kept inside the image ``[-1, 1]``."""
    moved = loc + action if cfg.relative else action
    if isinstance(moved, Tensor):
        return moved.clamp(-1.0, 1.0)
    return np.minimum(np.maximum(moved, -1.0), 1.0)  # np.clip's wrapper costs more


def _describe_bad(values: Tensor, bad: Tensor) -> str:
    idx = int(bad.nonzero()[0, 0])
    return f"index {idx}: {values[idx].tolist()}"


def _location_range_error(cfg: MDPConfig, where: str) -> ActionError:
    bound = cfg.location_bound
    return ActionError(
        f"location must lie in [-{bound:g}, {bound:g}]^2"
        f"{' (relative move)' if cfg.relative else ''}, got {where}"
        "; build the env with clip_actions=True to clip instead"
    )


def _label_range_error(cfg: MDPConfig, value: int, idx: int) -> ActionError:
    return ActionError(
        f"label must be a class index in [0, {cfg.num_classes}), got {value} at index {idx}"
    )


_NO_EARLY_STOP = "stop was requested but the MDP was built with early_stop=False"


class GlimpseMDP:
    """A batch of glimpse-taking episodes, all tensor state on one device.

    Args:
        config: the MDP's parameters.
        batch_size: number of episodes ``B`` held at once.
        device: where the state lives; images passed to :meth:`reset` are moved there.
    """

    def __init__(
        self, config: MDPConfig, batch_size: int, device: torch.device | str = "cpu"
    ) -> None:
        check_positive_int("batch_size", batch_size)
        self.config = config
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.retina = config.retina
        b, dev = batch_size, self.device
        self.loc = torch.zeros(b, *config.loc_shape, device=dev)
        # Every fixation of the episode: (B, max_steps, *loc_shape); ``num_fixations`` valid.
        self.history = torch.zeros(b, config.max_steps, *config.loc_shape, device=dev)
        self.num_fixations = torch.zeros(b, dtype=torch.long, device=dev)
        self.glimpses_this_target = torch.zeros(b, dtype=torch.long, device=dev)
        self.target = torch.zeros(b, dtype=torch.long, device=dev)
        self.done = torch.ones(b, dtype=torch.bool, device=dev)
        self.labels = torch.zeros(b, config.num_targets, dtype=torch.long, device=dev)
        self.predictions = torch.full_like(self.labels, -1)
        self.images: Tensor | None = None
        self.context: Tensor | None = None
        self._integral: IntegralImage | BoxPyramid | None = None
        # observation["step"] for every count of fixations (one table for both paths).
        self._step_table = torch.arange(config.max_steps + 1, device=dev) / config.max_steps
        self.scalar_path = (
            batch_size == 1
            and self.device.type == "cpu"
            and not config.differentiable
            and not config.num_parts
        )
        """Whether :meth:`step_one` takes the batch-of-one path: the same rule
        (:func:`_transition`) on Python scalars, reading and writing the state tensors
        through numpy views of their memory, instead of a few dozen tensor ops. True for
        ``B = 1`` on the CPU without ``differentiable`` or parts mode; set it to False to
        force the general path (the tests compare the two)."""
        self._views: dict[str, tuple[Tensor, np.ndarray]] = {}

    # ------------------------------------------------------------------ reset
    def reset(
        self,
        images: Tensor,
        labels: Tensor,
        index: Tensor | None = None,
        init_loc: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Start new episodes in the slots ``index`` (all slots if ``None``).

        Args:
            images: ``(n, C, H, W)`` float images in ``[0, 1]`` for the ``n`` slots.
            labels: ``(n,)`` or ``(n, num_targets)`` integer labels.
            index: ``(n,)`` long slot indices; ``None`` means all ``B`` slots, in order.
            init_loc: ``(n, 2)`` initial locations (in parts mode also ``(n, K, 2)``; an
                ``(n, 2)`` location is used for all ``K`` parts); default from
                ``config.init_location``.
            generator: source of randomness for ``init_location="random"``.

        Returns the observation of ALL slots (see :meth:`observe`).
        """
        cfg = self.config
        whole = index is None  # every slot, in order: slices instead of an index
        if whole:
            index = self._rows()
        index = torch.as_tensor(index, device=self.device, dtype=torch.long)
        n = index.numel()
        if images.ndim != 4 or images.shape[0] != n or not images.is_floating_point():
            raise ValueError(
                f"images must be a float (n={n}, C, H, W) tensor, got "
                f"{tuple(images.shape)} {images.dtype}"
            )
        labels = torch.as_tensor(labels, device=self.device).long().reshape(n, -1)
        if labels.shape[1] != cfg.num_targets:
            raise ValueError(
                f"expected {cfg.num_targets} label(s) per episode, got shape {tuple(labels.shape)}"
            )
        if ((labels < 0) | (labels >= cfg.num_classes)).any():
            raise ValueError(f"labels must lie in [0, {cfg.num_classes}), got {labels.tolist()}")
        if init_loc is None:
            if cfg.init_location == "random":
                init_loc = torch.rand(n, 2, generator=generator) * 2 - 1
            else:
                init_loc = torch.zeros(n, 2)
        init_loc = torch.as_tensor(init_loc, dtype=torch.float32).to(self.device)
        if cfg.num_parts and init_loc.numel() == 2 * n * cfg.num_parts:
            init_loc = init_loc.reshape(n, cfg.num_parts, 2)
        elif init_loc.numel() != 2 * n:
            raise ValueError(f"init_loc must have shape ({n}, 2), got {tuple(init_loc.shape)}")
        else:
            init_loc = init_loc.reshape(n, 2)
            if cfg.num_parts:
                init_loc = init_loc[:, None].expand(n, cfg.num_parts, 2)
        if not torch.isfinite(init_loc).all() or init_loc.abs().max() > 1:
            raise ValueError(f"init_loc must be finite and in [-1, 1], got {init_loc.tolist()}")
        images = images.to(self.device)
        if self.images is None or (
            index.numel() == self.batch_size and images.shape[1:] != (self.images.shape[1:])
        ):
            if n != self.batch_size:
                raise ValueError("the first reset must fill all slots (index=None)")
            self.images = images.clone()
            self._integral = self.retina.prepare(images)
            if cfg.context_size:  # clamped to the observation space once, here
                self.context = coarse_view(images, cfg.context_size).float().clamp_(0.0, 1.0)
        else:
            if images.shape[1:] != self.images.shape[1:]:
                raise ValueError(
                    f"images must have shape (n, *{tuple(self.images.shape[1:])}), "
                    f"got {tuple(images.shape)}"
                )
            if whole:
                self.images.copy_(images)
                self._integral.refill(images)
            else:
                self.images[index] = images
                self._integral.replace(index, images)
            if cfg.context_size:
                self.context[index] = coarse_view(images, cfg.context_size).clamp_(0.0, 1.0)
        if whole:
            index = slice(None)
        self.labels[index] = labels
        self.predictions[index] = -1
        if cfg.differentiable:  # start from tensors outside any earlier episode's graph
            self.loc, self.history = self.loc.detach().clone(), self.history.detach().clone()
        self.loc[index] = init_loc
        self.history[index] = 0.0
        self.history[index, 0] = init_loc
        self.num_fixations[index] = 1
        self.glimpses_this_target[index] = 1
        self.target[index] = 0
        self.done[index] = False
        return self.observe()

    def reset_one(
        self, images: Tensor, labels: Tensor, init_loc: tuple[float, float] | None = None
    ) -> dict[str, np.ndarray]:
        """:meth:`reset` of a batch of one: ``images`` ``(1, C, H, W)``, ``labels`` ``(1,)``
        or ``(1, num_targets)``, ``init_loc`` ``(x, y)`` (default from
        ``config.init_location``; ``"random"`` draws from torch's global generator).
        Returns :meth:`observe_one`. Same checks and messages as :meth:`reset`; with
        :attr:`scalar_path` the state is written through numpy views, in place."""
        cfg = self.config
        if not self.scalar_path or self.images is None or images.shape != self.images.shape:
            loc = None if init_loc is None else torch.as_tensor(np.asarray(init_loc, np.float32))
            self.reset(images, labels, init_loc=loc)
            return self.observe_one()
        if not images.is_floating_point():
            raise ValueError(
                f"images must be a float (n=1, C, H, W) tensor, got "
                f"{tuple(images.shape)} {images.dtype}"
            )
        values = labels.reshape(-1).tolist()
        if len(values) != cfg.num_targets:
            raise ValueError(
                f"expected {cfg.num_targets} label(s) per episode, got shape "
                f"{tuple(labels.reshape(1, -1).shape)}"
            )
        if not all(0 <= v < cfg.num_classes for v in values):
            raise ValueError(f"labels must lie in [0, {cfg.num_classes}), got {[values]}")
        if init_loc is None:
            xy = torch.rand(2).mul_(2).sub_(1) if cfg.init_location == "random" else (0.0, 0.0)
            init_loc = np.asarray(xy, dtype=np.float32)
        init = np.asarray(init_loc, dtype=np.float32)
        if init.size != 2:
            raise ValueError(f"init_loc must have shape (1, 2), got {init.shape}")
        init = init.reshape(2)
        xy = init.tolist()
        if not all(map(math.isfinite, xy)) or max(map(abs, xy)) > 1:
            raise ValueError(f"init_loc must be finite and in [-1, 1], got {[xy]}")
        self.images.copy_(images)
        self._integral.refill(self.images)
        if cfg.context_size:
            self.context.copy_(coarse_view(images, cfg.context_size).clamp_(0.0, 1.0))
        self._view("labels")[0] = values
        self._view("predictions")[0] = -1
        self._view("loc")[0] = init
        history = self._view("history")[0]
        history[:] = 0.0
        history[0] = init
        self._view("num_fixations")[0] = 1
        self._view("glimpses_this_target")[0] = 1
        self._view("target")[0] = 0
        self._view("done")[0] = False
        return self.observe_one()

    # ---------------------------------------------------------------- observe
    def observe(self) -> dict[str, Tensor]:
        """Observations of all slots: ``glimpse`` ``(B, k, C, g, g)`` float32, ``location``
        ``(B, 2)`` float32, ``step`` ``(B, 1)``: glimpses taken / ``num_targets * T``, and
        with ``context_size = s > 0``, ``context`` ``(B, C, s, s)``: the coarse whole image.

        Parts mode: ``glimpse`` ``(B, K, k, C, g, g)``, ``location`` ``(B, K, 2)`` and
        ``history`` ``(B, max_steps, K, 2)`` (fixations so far; later rows zero)."""
        if self._integral is None:
            raise RuntimeError("reset() must be called before observe()")
        # = _step_table[num_fixations]: the same float32 division, without an index op
        step = (self.num_fixations / self.config.max_steps).unsqueeze(1)
        obs = {"glimpse": self._glimpse(), "location": self.loc.clone(), "step": step}
        if self.config.context_size:
            obs["context"] = self.context.clone()
        if self.config.num_parts:
            obs["history"] = self.history.clone()
        return obs

    def observe_one(self) -> dict[str, np.ndarray]:
        """:meth:`observe` of a batch of one as fresh float32 numpy arrays, without the
        batch dimension (the single-episode Gymnasium face's observation)."""
        if self._integral is None:
            raise RuntimeError("reset() must be called before observe()")
        if not self.scalar_path:
            return {
                k: v[0].detach().cpu().numpy().astype(np.float32) for k, v in self.observe().items()
            }
        step = self._view("_step_table")[self._view("num_fixations")[0]]
        # The glimpse of _glimpse(), clamped in numpy (cheaper for one glimpse).
        glimpse = self.retina.sample(self._integral, self.loc).numpy()[0]
        glimpse = glimpse.astype(np.float32, copy=False)  # a fresh array: no copy needed
        obs = {
            "glimpse": np.minimum(np.maximum(glimpse, 0.0, out=glimpse), 1.0, out=glimpse),
            "location": self._view("loc")[0].copy(),
            "step": np.array([step], dtype=np.float32),
        }
        if self.config.context_size:
            obs["context"] = self._view("context")[0].copy()
        return obs

    def _glimpse(self) -> Tensor:
        """Glimpses at the current locations ``(B, k, C, g, g)`` (parts mode ``(B, K, k, C,
        g, g)``), float32, clamped to the observation space [0, 1]: the prepared paths can
        return rounding residue such as -4e-16 for an all-zero cell. The locations were
        validated on the way in, so the retina does not re-check them."""
        if self.config.num_parts:
            parts = [
                self.retina.sample(self._integral, self.loc[:, j]) for j in range(self.loc.shape[1])
            ]
            return torch.stack(parts, 1).float().clamp_(0.0, 1.0)
        return self.retina.sample(self._integral, self.loc).float().clamp_(0.0, 1.0)

    def _view(self, name: str) -> np.ndarray:
        """A numpy view of the CPU state tensor ``self.<name>`` (same memory), re-made
        whenever the attribute is rebound to a new tensor."""
        tensor = getattr(self, name)
        cached = self._views.get(name)
        if cached is None or cached[0] is not tensor:
            cached = self._views[name] = (tensor, tensor.numpy())
        return cached[1]

    # ------------------------------------------------------------- validation
    def _rows(self) -> Tensor:
        """``arange(B)`` on the device, made once."""
        rows = self.__dict__.get("_arange")
        if rows is None:
            rows = self._arange = torch.arange(self.batch_size, device=self.device)
        return rows

    def _actions_valid(
        self, location: Tensor, label: Tensor, no_stop: bool, active: Tensor | bool, every: bool
    ) -> bool:
        """Whether a step passes every check of :meth:`step` and :meth:`_validate` (no
        ended episode among the ``active`` slots, then :meth:`_validate`'s), decided with
        one reduction; False sends :meth:`step` through the checks one by one, which
        raise with the message. ``every``: all slots are active; ``no_stop``: no stop."""
        cfg, b = self.config, self.batch_size
        if (
            location.shape != (b, *cfg.loc_shape)
            or label.shape != (b,)
            or not location.is_floating_point()
            or label.is_floating_point()
            or label.dtype in (torch.bool, torch.uint16, torch.uint32, torch.uint64)
            or not (no_stop or cfg.early_stop)
        ):
            return False  # a shape, dtype or stop the checks reject (or wide uint labels)
        flat = location.reshape(b, -1)
        if cfg.clip_actions:
            ok = torch.isfinite(flat).all(1)
        else:  # NaN fails the comparison (amax propagates it), as does inf
            ok = flat.abs().amax(1) <= cfg.location_bound + 1e-6
        ok = (ok & (label >= 0) & (label < cfg.num_classes)).gt(self.done)  # gt: & ~done
        return bool((ok if every else ok | ~active).all())

    def _validate(self, location: Tensor, label: Tensor, stop: Tensor, active: Tensor) -> Tensor:
        """Check an action batch; return the (possibly clipped) location. Raises ActionError."""
        cfg, b = self.config, self.batch_size
        if location.shape != (b, *cfg.loc_shape):
            want = ", ".join(map(str, (b, *cfg.loc_shape)))
            raise ActionError(f"location must have shape ({want}), got {tuple(location.shape)}")
        if label.shape != (b,):
            raise ActionError(f"label must have shape ({b},), got {tuple(label.shape)}")
        if not location.is_floating_point():
            raise ActionError(f"location must be floating point, got dtype {location.dtype}")
        if label.is_floating_point() or label.dtype == torch.bool:
            raise ActionError(f"label must be an integer class index, got dtype {label.dtype}")
        flat = location.reshape(b, -1)
        finite = torch.isfinite(flat).all(1) | ~active
        if not finite.all():
            raise ActionError(
                f"location must be finite, got NaN/inf at {_describe_bad(flat, ~finite)}"
            )
        bound = cfg.location_bound
        if cfg.clip_actions:
            location = location.clamp(-bound, bound)
        elif (out := (flat.abs() > bound + 1e-6).any(1) & active).any():
            raise _location_range_error(cfg, _describe_bad(location, out))
        # torch has no comparisons for uint16/32/64; as int64, uint64 >= 2**63 is negative.
        wide = label.dtype in (torch.uint16, torch.uint32, torch.uint64)
        lab = label.long() if wide else label
        bad = ((lab < 0) | (lab >= cfg.num_classes)) & active
        if bad.any():
            idx = int(bad.nonzero()[0, 0])
            value = int(lab[idx]) + (2**64 if wide and int(lab[idx]) < 0 else 0)
            raise _label_range_error(cfg, value, idx)
        if stop.any() and not cfg.early_stop:
            raise ActionError(_NO_EARLY_STOP)
        return location

    # ------------------------------------------------------------------- step
    def step(
        self,
        location: Tensor,
        label: Tensor | None = None,
        stop: Tensor | None = None,
        active: Tensor | None = None,
    ) -> StepResult:
        """Advance the episodes in ``active`` slots (all if ``None``) by one step.

        Args:
            location: ``(B, 2)`` next fixation (absolute, or a move if ``relative``);
                ``(B, K, 2)`` in parts mode.
            label: ``(B,)`` class read on classifying steps (may be ``None`` on steps
                that cannot classify).
            stop: ``(B,)`` bool, "classify now" (needs ``early_stop=True``).
            active: ``(B,)`` bool, slots to advance; others are left untouched.

        Raises :class:`ActionError` (state unchanged) for invalid actions and for stepping
        an episode that has ended.
        """
        cfg, b, dev = self.config, self.batch_size, self.device
        if self._integral is None:
            raise RuntimeError("reset() must be called before step()")
        location = torch.as_tensor(location, device=dev)
        # No mask (all slots advance) and no stop are Python bools in the rule and the checks
        # (the rule's operators mean the same on them); the one-by-one checks get tensors.
        every = active is None
        active = True if every else torch.as_tensor(active, device=dev, dtype=torch.bool)
        no_stop = stop is None
        if no_stop:
            stop = False
        else:
            stop = torch.as_tensor(stop, device=dev)
            if stop.shape != (b,):  # before ``classify`` below broadcasts it
                raise ActionError(f"stop must have shape ({b},), got {tuple(stop.shape)}")
            if stop.is_floating_point() or ((stop != 0) & (stop != 1)).any():
                raise ActionError(f"stop must be 0/1 or bool, got {stop.tolist()} ({stop.dtype})")
            stop = stop.bool()
        if label is None:
            label = torch.zeros(b, dtype=torch.long, device=dev)
            rule = _transition(cfg, self.glimpses_this_target, self.target, stop, active, 0, 0)
            if rule.classify.any():
                raise ActionError("label is required on a step that classifies")
        label = torch.as_tensor(label, device=dev)
        if not cfg.differentiable:
            location = location.detach()
        # Validated in the given precision (a float64 1e300 is out of range, not inf).
        if self._actions_valid(location, label, no_stop, active, every):
            if cfg.clip_actions:
                location = location.clamp(-cfg.location_bound, cfg.location_bound)
        else:  # the checks one by one, in order, for the message (this raises)
            if every:
                active = torch.ones(b, dtype=torch.bool, device=dev)
            if no_stop:
                stop = torch.zeros(b, dtype=torch.bool, device=dev)
            if (self.done & active).any():
                idx = int((self.done & active).nonzero()[0, 0])
                raise ActionError(f"episode {idx} has ended; call reset() before step()")
            location = self._validate(location, label, stop, active)
        location = location.float()
        label = label.long()

        # Classification of the current target, then the move (the rule: _transition).
        # ``self.target`` and the other counters are rebound below, never written in place
        # by a step, so ``tgt`` can be returned as it is.
        tgt = self.target
        col = tgt.clamp(max=cfg.num_targets - 1)[:, None]
        true = self.labels.gather(1, col)[:, 0]
        t = _transition(cfg, self.glimpses_this_target, tgt, stop, active, label, true)
        # predictions[i, tgt[i]] = label[i] where classifying (then tgt[i] = col[i]).
        read = torch.where(t.classify, label, self.predictions.gather(1, col)[:, 0])
        self.predictions.scatter_(1, col, read[:, None])
        self.target = tgt + t.classify
        new_loc = _next_location(cfg, self.loc, location)
        moving = t.moving.view(b, *[1] * (new_loc.ndim - 1))
        self.loc = torch.where(moving, new_loc, self.loc)
        # history[i, slot[i]] = loc[i] where moving (elsewhere: rewritten with itself).
        slot = self.num_fixations.clamp(max=cfg.max_steps - 1)
        slot = slot.view(b, 1, *[1] * len(cfg.loc_shape)).expand(b, 1, *cfg.loc_shape)
        kept = self.history.gather(1, slot)[:, 0]
        self.history.scatter_(1, slot, torch.where(moving, self.loc, kept)[:, None])
        self.num_fixations = self.num_fixations + t.moving
        self.glimpses_this_target = t.glimpses
        self.done = self.done | t.terminated
        return StepResult(
            obs=self.observe(),
            reward=t.reward,
            terminated=t.terminated,
            classified=t.classify,
            prediction=t.prediction,
            correct=t.correct,
            target=tgt,
        )

    def step_one(self, location: np.ndarray, label: int, stop: int = 0) -> OneStep:
        """:meth:`step` of a batch of one, from numpy and Python values: the single-episode
        face's step. Same rule, same checks, same messages, same :class:`ActionError`
        semantics (state unchanged) as :meth:`step` on the ``(1, ...)`` tensors.

        Args:
            location: ``loc_shape`` floats (the caller checked shape and dtype); validated
                in float64, like :meth:`step`'s float64 tensors.
            label: the class read on a classifying step (an int in int64's range).
            stop: "classify now", 0 or 1 (other ints are rejected as in :meth:`step`).

        With :attr:`scalar_path` the rule runs on Python scalars; otherwise this is
        :meth:`step` on the tensors, its result read back as numpy and Python values.
        """
        if not self.scalar_path:
            location = torch.from_numpy(np.array(location, dtype=np.float64))
            res = self.step(
                location.reshape(1, *self.config.loc_shape),
                torch.tensor([label], dtype=torch.long),
                torch.tensor([stop], dtype=torch.long),
            )
            obs = {k: v[0].detach().cpu().numpy().astype(np.float32) for k, v in res.obs.items()}
            terminated = bool(res.terminated[0])
            right = (self.predictions[0] == self.labels[0]).float().mean() if terminated else None
            return OneStep(
                obs,
                float(res.reward[0]),
                terminated,
                bool(res.classified[0]),
                int(res.prediction[0]),
                bool(res.correct[0]),
                int(res.target[0]),
                None if right is None else float(right),
            )
        cfg = self.config
        if self._integral is None:
            raise RuntimeError("reset() must be called before step()")
        # The checks of step() and _validate(), in their order, on Python values.
        if stop not in (0, 1):
            raise ActionError(f"stop must be 0/1 or bool, got [{stop}] (torch.int64)")
        if self._view("done")[0]:
            raise ActionError("episode 0 has ended; call reset() before step()")
        xy = np.asarray(location, dtype=np.float64).tolist()
        if not all(map(math.isfinite, xy)):
            raise ActionError(f"location must be finite, got NaN/inf at index 0: {xy}")
        bound = cfg.location_bound
        if cfg.clip_actions:
            xy = [min(max(v, -bound), bound) for v in xy]
        elif max(map(abs, xy)) > bound + 1e-6:
            raise _location_range_error(cfg, f"index 0: {xy}")
        if not 0 <= label < cfg.num_classes:
            raise _label_range_error(cfg, label, 0)
        if stop and not cfg.early_stop:
            raise ActionError(_NO_EARLY_STOP)

        # The rule, on scalars; the state written through numpy views of its tensors.
        target, glimpses = self._view("target"), self._view("glimpses_this_target")
        fixations, loc = self._view("num_fixations"), self._view("loc")
        tgt = int(target[0])
        labels = self._view("labels")[0]
        t = _transition(
            cfg,
            int(glimpses[0]),
            tgt,
            bool(stop),
            True,
            label,
            int(labels[min(tgt, cfg.num_targets - 1)]),
        )
        if t.classify:
            self._view("predictions")[0, tgt] = label
            target[0] = tgt + 1
        if t.moving:
            n = int(fixations[0])
            loc[0] = _next_location(cfg, loc[0], np.array(xy, dtype=np.float32))
            self._view("history")[0, min(n, cfg.max_steps - 1)] = loc[0]
            fixations[0] = n + 1
        glimpses[0] = t.glimpses
        right = None
        if t.terminated:
            self._view("done")[0] = True
            # As (predictions == labels).float().mean(): k/n rounded once to float32.
            hits = self._view("predictions")[0] == labels
            right = float(np.float32(int(hits.sum())) / np.float32(len(hits)))
        return OneStep(
            self.observe_one(),
            t.reward,
            t.terminated,
            t.classify,
            t.prediction,
            t.correct,
            tgt,
            right,
        )

    # ---------------------------------------------------------------- helpers
    def trajectory(self, index: int) -> Tensor:
        """Fixations so far of episode ``index``: ``(n, 2)`` (parts mode ``(n, K, 2)``), CPU."""
        n = int(self.num_fixations[index])
        return self.history[index, :n].cpu()
