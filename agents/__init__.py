"""Hard-attention agents and their training algorithms.

- :class:`agents.ram.RAM` (Mnih et al. 2014) on the :class:`agents.policy.GlimpsePolicy`
  interface, trained by batched REINFORCE (:mod:`agents.reinforce`, :mod:`agents.train`).
"""

from agents.policy import GlimpsePolicy, PolicyStep
from agents.ram import RAM

__all__ = ["RAM", "GlimpsePolicy", "PolicyStep"]
