"""Fixed-location controls (issue 17): the RAM network with locations that are not learnt.

They measure what a learned location policy adds: the glimpse network, core and classifier
are RAM's (:class:`agents.ram.RAM`, the MLP or the conv glimpse network) and are trained by
backpropagation of the classification loss alone
(:func:`agents.reinforce.classification_loss`); the locations come from a rule:

- ``glimpse-random`` (:class:`RandomLocations`): every fixation uniform in ``[-1, 1]^2``,
  independently at every step (the first one is the env's ``init_location``, random by
  default). In evaluation the draws come from the per-episode noise of
  :func:`agents.reinforce.episode_draws` (a standard normal ``z`` becomes ``2 Phi(z) - 1``,
  exactly uniform), so an evaluation seed fixes them and they do not depend on the batch;
  the policy has no mean, so ``single-mean`` and ``single-sampled`` play the same
  episodes. In training they come from the trainer's seeded global generator.
- ``glimpse-grid`` (:class:`GridScan`): a fixed scan path over the cell centres of a grid
  tiling the image, :func:`scan_path`: ``cols = ceil(sqrt(T))`` columns and ``rows =
  ceil(T / cols)`` rows, visited as a serpentine (left to right on the top row, right to
  left on the next, ...), the ``T`` glimpses taking the first ``T`` cells. The path's first
  cell is the first fixation (it replaces the env's ``init_location``), so every episode of
  every image is the same path: 6 glimpses on MNIST are a 3 x 2 grid (cell centres at
  ``x = -2/3, 0, 2/3`` and ``y = -1/2, 1/2``), 8 on the cluttered tasks 8 of a 3 x 3 grid.

Both wrap a RAM (the *body*): :meth:`FixedLocationPolicy.act` runs its glimpse network and
core (:meth:`agents.ram.RAM.integrate`) and its classifier, and emits the rule's location
with log-probability, entropy and value 0 (constants: no gradient). The body's location
and baseline heads are never evaluated, so they receive no gradient and stay at their
initialisation (``2 x (hidden + 1)`` and ``hidden + 1`` parameters, counted in the
model's size). Glimpses are the env's, as for every agent (DESIGN.md).
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from agents.policy import GlimpsePolicy, PolicyStep
from agents.ram import RAM

__all__ = ["FixedLocationPolicy", "GridScan", "RAMBodyPolicy", "RandomLocations", "scan_path"]


def scan_path(num_glimpses: int) -> Tensor:
    """``(T, 2)`` locations ``(x, y)`` of the grid scan: the serpentine over the cell
    centres of a ``cols x rows`` grid tiling ``[-1, 1]^2``, ``cols = ceil(sqrt(T))``,
    ``rows = ceil(T / cols)``, cut after ``T`` cells (module docstring)."""
    if not isinstance(num_glimpses, int) or isinstance(num_glimpses, bool) or num_glimpses < 1:
        raise ValueError(f"num_glimpses must be a positive int, got {num_glimpses!r}")
    cols = math.ceil(math.sqrt(num_glimpses))
    rows = math.ceil(num_glimpses / cols)
    xs = [-1 + (2 * j + 1) / cols for j in range(cols)]
    ys = [-1 + (2 * i + 1) / rows for i in range(rows)]
    cells = [(x, y) for i, y in enumerate(ys) for x in (xs if i % 2 == 0 else xs[::-1])]
    return torch.tensor(cells[:num_glimpses], dtype=torch.float32)


class RAMBodyPolicy(GlimpsePolicy):
    """A policy that wraps a RAM (the *body*) and uses its networks: the fixed-location
    controls here and ``glimpse-soft`` (:mod:`agents.soft_locations`)."""

    def __init__(self, body: RAM) -> None:
        if not isinstance(body, RAM):
            raise ValueError(f"body must be a RAM, got {type(body).__name__}")
        super().__init__(body.num_classes, location_bound=body.location_bound)
        self.body = body

    def initial_state(self, obs: dict[str, Tensor]) -> Tensor:
        return self.body.initial_state(obs)


class FixedLocationPolicy(RAMBodyPolicy):
    """A RAM whose locations come from a rule instead of its location head.

    Args:
        body: the RAM whose glimpse network, core and classifier are used.

    Subclasses implement :meth:`locations`. ``evaluate_actions`` (PPO) is refused: there is
    no location distribution to score.
    """

    def heads(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(new_state, location, logits, value 0)``: the rule's location stands in for
        the mean (:meth:`act` passes no noise; use :meth:`act`)."""
        step = self.act(obs, state, deterministic=True)
        return step.state, step.location, step.logits, step.value

    @abc.abstractmethod
    def locations(
        self, obs: dict[str, Tensor], generator: torch.Generator | None, noise: Tensor | None
    ) -> Tensor:
        """``(B, 2)`` the next fixations, in ``[-1, 1]``, after observing ``obs``."""

    def act(
        self,
        obs: dict[str, Tensor],
        state: Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> PolicyStep:
        """Integrate ``obs`` (glimpse network, core, classifier of the body) and emit the
        rule's next location (``deterministic`` is ignored: the rule is the policy)."""
        state, h = self.body.integrate(obs, state)
        logits = self.body.classifier(h)
        with torch.no_grad():
            location = self.locations(obs, generator, noise).to(h.dtype)
        zero = h.new_zeros(h.shape[0])
        return PolicyStep(state, location, zero, zero, zero, logits, location)

    def evaluate_actions(
        self, obs: dict[str, Tensor], state: Tensor, location: Tensor
    ) -> PolicyStep:
        # a deliberate refusal, not a stub: there is no location distribution to re-score
        # (PPOTrainConfig already refuses these agents with a one-line error)
        raise TypeError(
            f"{type(self).__name__} has fixed locations: nothing for PPO to score or train"
        )


class RandomLocations(FixedLocationPolicy):
    """``glimpse-random``: every next fixation uniform in ``[-1, 1]^2`` (module docstring)."""

    def locations(
        self, obs: dict[str, Tensor], generator: torch.Generator | None, noise: Tensor | None
    ) -> Tensor:
        loc = obs["location"]
        if noise is not None:
            if noise.shape != loc.shape:
                raise ValueError(
                    f"noise must have shape {tuple(loc.shape)}, got {tuple(noise.shape)}"
                )
            u = torch.special.ndtr(noise.to(device=loc.device, dtype=torch.float64))
        else:
            u = torch.rand(loc.shape, generator=generator, device=loc.device, dtype=torch.float64)
        return (2 * u - 1).clamp(-1, 1).float()


class GridScan(FixedLocationPolicy):
    """``glimpse-grid``: the fixed serpentine scan of :func:`scan_path` (module docstring).

    Args:
        body: the RAM.
        num_glimpses: ``T``; the path restarts for every target (``step`` of the
            observation counts the glimpses taken).
        max_steps: the env's steps per episode, ``num_targets * T``.
    """

    seed_free = True  # the same path for every image, seed and protocol

    def __init__(self, body: RAM, num_glimpses: int, max_steps: int | None = None) -> None:
        super().__init__(body)
        self.num_glimpses = num_glimpses
        self.max_steps = max_steps or num_glimpses
        self.register_buffer("path", scan_path(num_glimpses), persistent=False)

    def first_location(self, n: int, device: torch.device) -> Tensor:
        return self.path[0].to(device).expand(n, 2).clone()

    def locations(
        self, obs: dict[str, Tensor], generator: torch.Generator | None, noise: Tensor | None
    ) -> Tensor:
        taken = (obs["step"][:, 0] * self.max_steps).round().long()  # index of the next glimpse
        return self.path[taken % self.num_glimpses].to(obs["location"].device)
