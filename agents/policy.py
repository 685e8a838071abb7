"""The policy interface every glimpse agent offers, so REINFORCE and PPO can drive any of them.

A glimpse policy is recurrent: it integrates one observation (glimpse, location, step)
per env step into its state, then emits

- a distribution over the next location (:class:`agents.distributions.ClippedGaussian`),
- classification logits (read by the env on classifying steps),
- a value / baseline estimate of the return.

:meth:`GlimpsePolicy.act` samples (or takes the mode of) the location;
:meth:`GlimpsePolicy.evaluate_actions` re-scores given locations from given states (PPO's
minibatches). Subclasses implement :meth:`GlimpsePolicy.initial_state` and
:meth:`GlimpsePolicy.heads`. A policy that chooses its own first fixation (a fixed scan
path, :mod:`agents.fixed`) returns it from :meth:`GlimpsePolicy.first_location`; the others
start where the env's ``init_location`` puts them.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from agents.distributions import ClippedGaussian

__all__ = ["GlimpsePolicy", "PolicyStep"]


@dataclass
class PolicyStep:
    """One step of a glimpse policy (leading dim ``B``)."""

    state: Tensor
    """Recurrent state after integrating this step's observation."""
    location: Tensor
    """``(B, 2)`` the next fixation, as sent to the env (clipped to the bound)."""
    log_prob: Tensor
    """``(B,)`` log-probability of ``location`` (density inside, mass on the bounds)."""
    entropy: Tensor
    """``(B,)`` entropy of the location distribution."""
    value: Tensor
    """``(B,)`` baseline / value estimate."""
    logits: Tensor
    """``(B, num_classes)`` classification logits."""
    mean: Tensor
    """``(B, 2)`` mean of the location distribution."""


class GlimpsePolicy(nn.Module, abc.ABC):
    """Base class: a recurrent glimpse agent with a clipped-Gaussian location policy.

    Args:
        num_classes: classes of each target.
        std: standard deviation of the location policy (initial value if learned).
        learn_std: learn a state-independent log-std.
        location_bound: the env's location bound (1 for absolute locations).
    """

    seed_free: bool = False
    """True when the policy's episodes on an image do not depend on the evaluation seed
    under any protocol (no sampled locations, its own first fixation): evaluation then
    plays one seed (:func:`agents.evaluation.evaluate_protocols`)."""

    def __init__(
        self,
        num_classes: int,
        std: float = 0.15,
        learn_std: bool = False,
        location_bound: float = 1.0,
    ) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"std must be positive, got {std!r}")
        self.num_classes = num_classes
        self.location_bound = float(location_bound)
        log_std = torch.full((2,), math.log(std))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)

    @abc.abstractmethod
    def initial_state(self, obs: dict[str, Tensor]) -> Tensor:
        """The state before the first observation of a batch of episodes (``(B, S)``)."""

    @abc.abstractmethod
    def heads(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Integrate ``obs``: returns ``(new_state, location_mean, logits, value)``."""

    def first_location(self, n: int, device: torch.device) -> Tensor | None:
        """``(n, 2)`` first fixations this policy chooses itself, or ``None`` (the default):
        the env's (``init_location``, or the ``init_loc`` reset option)."""
        return None

    @property
    def std(self) -> Tensor:
        """Current location-policy standard deviation, ``(2,)``."""
        return self.log_std.exp()

    def distribution(self, mean: Tensor) -> ClippedGaussian:
        """The location distribution, always in fp32 (also under bf16 autocast: the
        REINFORCE/PPO log-probabilities must not be rounded to 8 bits)."""
        return ClippedGaussian(mean.float(), self.std.float(), self.location_bound)

    def act(
        self,
        obs: dict[str, Tensor],
        state: Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> PolicyStep:
        """Integrate ``obs`` and choose the next location (sampled, or the mean); ``noise``
        ``(B, 2)``: the standard normal draws of the sample (default: from ``generator``)."""
        state, mean, logits, value = self.heads(obs, state)
        dist = self.distribution(mean)
        location = dist.mode() if deterministic else dist.sample(generator, noise)
        return PolicyStep(
            state, location, dist.log_prob(location), dist.entropy(), value.float(), logits, mean
        )

    def evaluate_actions(
        self, obs: dict[str, Tensor], state: Tensor, location: Tensor
    ) -> PolicyStep:
        """Integrate ``obs`` from ``state`` and score the given ``location``."""
        state, mean, logits, value = self.heads(obs, state)
        dist = self.distribution(mean)
        return PolicyStep(
            state, location, dist.log_prob(location), dist.entropy(), value.float(), logits, mean
        )
