"""``glimpse-soft`` (issue 17): RAM with differentiable locations, trained by backpropagation.

The matched control for "hard versus soft" in which the way locations are learnt is the
only difference from RAM (Mnih et al. 2014): the same glimpse network (MLP or conv), core,
classifier, number of glimpses, glimpse size and scales; the location network is RAM's
``l_{t+1} = tanh(Linear(h_t))`` but emitted *deterministically* (no Gaussian, no
REINFORCE, no baseline), and the glimpse at ``l_{t+1}`` is taken by the env's retina in
its differentiable mode (:attr:`envs.MDPConfig.differentiable`): the retina's sampling is
piecewise linear in the location (bilinear interpolation of box-filtered images, see
:mod:`glimpse.retina`), so the classification loss back-propagates through every glimpse
into the location network, the core and the earlier glimpses -- end to end, as a spatial
transformer is trained (Jaderberg et al. 2015), but with RAM's foveated glimpses.

Differences from RAM, stated once:

- locations are the mean of RAM's location head, never sampled (so ``single-mean`` and
  ``single-sampled`` play the same episodes; only the first fixation, random by default,
  depends on the evaluation seed);
- by default the core is not detached from the location head (``detach_location`` has no
  effect: the location's gradient is the classification loss's and it shapes the core);
  ``--location-gradient head`` detaches it, so only the head learns where to look (on
  cluttered 60x60 the end-to-end gradient stalls learning; docs/RESULTS.md, issue 17);
- the baseline head is never evaluated (no reward to predict): it keeps its initial
  weights, counted in the model's size as for the fixed-location controls.

Glimpses still come from the env (DESIGN.md: agents never crop), so what the agent sees is
exactly what RAM sees at the same locations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from agents.fixed import RAMBodyPolicy
from agents.policy import PolicyStep
from agents.ram import RAM

__all__ = ["SoftLocations"]


class SoftLocations(RAMBodyPolicy):
    """RAM's network whose next location is its location head's output, differentiable.

    Args:
        body: the RAM whose glimpse network, core, location head and classifier are used
            (its ``detach_location`` is ignored).
        detach_core: feed the location head a detached core state, so the location's
            gradient trains the head alone (``--location-gradient head``); by default it
            also reaches the core and the earlier glimpses.
    """

    def __init__(self, body: RAM, detach_core: bool = False) -> None:
        super().__init__(body)
        self.detach_core = detach_core

    def heads(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(new_state, location, logits, value 0)`` with the location differentiable in
        the body's parameters (and through ``obs`` in the earlier glimpses)."""
        state, h = self.body.integrate(obs, state)
        location = torch.tanh(self.body.locator(h.detach() if self.detach_core else h))
        location = location * self.location_bound
        return state, location, self.body.classifier(h), h.new_zeros(h.shape[0])

    def act(
        self,
        obs: dict[str, Tensor],
        state: Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> PolicyStep:
        """Integrate ``obs`` and emit the next location, always the head's output
        (``deterministic``, ``generator`` and ``noise`` are ignored: nothing is sampled).
        Log-probability and entropy are zero constants: there is no distribution."""
        state, location, logits, value = self.heads(obs, state)
        return PolicyStep(state, location, value, value, value, logits, location)

    def evaluate_actions(
        self, obs: dict[str, Tensor], state: Tensor, location: Tensor
    ) -> PolicyStep:
        # a deliberate refusal: no location distribution to score (PPO refuses the agent)
        raise TypeError("glimpse-soft has deterministic locations: nothing for PPO to score")
