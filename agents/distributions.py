"""The location policy's distribution: a Gaussian whose samples are clipped to the box.

The env accepts locations in ``[-b, b]^2``. A Gaussian sample outside must be clipped
before it is sent, and REINFORCE/PPO need the log-probability *of the action actually
sent*. Clipping maps all the mass beyond a bound onto the bound itself, so the clipped
Gaussian is a mixed distribution, per coordinate:

- density ``N(a; mu, sigma)`` for ``-b < a < b``;
- a point mass ``P(u <= -b) = Phi((-b - mu) / sigma)`` at ``a = -b``;
- a point mass ``P(u >= b) = Phi((mu - b) / sigma)`` at ``a = b``.

:meth:`ClippedGaussian.log_prob` returns exactly that (a density inside, a log-probability
on the bounds), so the score-function gradient is unbiased for the actions the env saw.
Popular RAM reimplementations use the Gaussian density of the *unclipped* sample, or of
the clipped value as if no mass had piled up there; both are wrong near the edges.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ClippedGaussian"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class ClippedGaussian:
    """Diagonal Gaussian ``N(mean, std^2)`` clipped to ``[-bound, bound]`` per coordinate.

    Args:
        mean: ``(B, D)``.
        std: ``(B, D)`` or broadcastable, positive.
        bound: the clip bound ``b``.
    """

    def __init__(self, mean: Tensor, std: Tensor | float, bound: float = 1.0) -> None:
        self.mean = mean
        self.std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device).expand_as(mean)
        self.bound = float(bound)

    def sample(
        self, generator: torch.Generator | None = None, noise: Tensor | None = None
    ) -> Tensor:
        """A clipped sample (no gradient), ``(B, D)``: ``mean + std * noise`` with ``noise``
        standard normal, drawn from ``generator`` unless given (``(B, D)``, e.g. seeded per
        episode so that a sample does not depend on the rest of the batch)."""
        with torch.no_grad():
            if noise is not None:
                if noise.shape != self.mean.shape:
                    raise ValueError(
                        f"noise must have shape {tuple(self.mean.shape)}, got {tuple(noise.shape)}"
                    )
                noise = noise.to(device=self.mean.device, dtype=self.mean.dtype)
                return (self.mean + self.std * noise).clamp(-self.bound, self.bound)
            noise = (
                torch.randn(
                    self.mean.shape,
                    generator=generator,
                    device=self.mean.device,
                    dtype=self.mean.dtype,
                )
                if generator is not None
                else (torch.randn_like(self.mean))
            )
            return (self.mean + self.std * noise).clamp(-self.bound, self.bound)

    def mode(self) -> Tensor:
        """The most likely interior point: the clipped mean."""
        return self.mean.clamp(-self.bound, self.bound)

    def log_prob(self, action: Tensor) -> Tensor:
        """Log-probability (density inside, mass on the bounds) summed over ``D``: ``(B,)``."""
        b = self.bound
        z = (action - self.mean) / self.std
        inside = -0.5 * z * z - self.std.log() - _LOG_SQRT_2PI
        upper = torch.special.log_ndtr((self.mean - b) / self.std)
        lower = torch.special.log_ndtr((-b - self.mean) / self.std)
        lp = torch.where(action >= b, upper, torch.where(action <= -b, lower, inside))
        return lp.sum(-1)

    def entropy(self) -> Tensor:
        """Entropy of the unclipped Gaussian, ``(B,)`` (a smooth proxy for the bonus)."""
        return (0.5 + _LOG_SQRT_2PI + self.std.log()).sum(-1).expand(self.mean.shape[0])
