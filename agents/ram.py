"""RAM: the Recurrent Attention Model of Mnih, Heess, Graves and Kavukcuoglu (2014),
*Recurrent Models of Visual Attention*.

Networks (paper section 4, "Architecture"), with ``rho(x, l)`` the glimpse the env returns:

- glimpse network ``f_g``: ``h_g = Rect(Linear(rho(x, l)))`` (128), ``h_l = Rect(Linear(l))``
  (128), ``g = Rect(Linear(h_g) + Linear(h_l))`` (256): "what" and "where" combined;
- core network ``f_h``: ``h_t = Rect(Linear(h_{t-1}) + Linear(g_t))`` (256 units), or an LSTM;
- location network ``f_l``: the next location ``l_{t+1} ~ N(tanh(Linear(h_t)), sigma^2)``,
  clipped to the location box (the log-probability is that of the clipped action,
  :mod:`agents.distributions`); ``sigma`` fixed or learned. The paper's ``f_l`` is linear;
  the ``tanh`` keeps the mean inside the box;
- action network ``f_a``: ``softmax(Linear(h_t))`` over the classes;
- baseline ``b_t = Linear(h_t)`` on a detached ``h_t`` by default, so that the regression
  of the baseline onto the return does not shape the representation.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from agents.policy import GlimpsePolicy

__all__ = ["RAM", "GlimpseNetwork"]


class GlimpseNetwork(nn.Module):
    """``f_g``: ``(glimpse (B, k, C, g, g), location (B, 2)) -> g_t (B, out_dim)``."""

    def __init__(
        self,
        glimpse_shape: tuple[int, int, int, int],
        what_dim: int = 128,
        where_dim: int = 128,
        out_dim: int = 256,
    ) -> None:
        super().__init__()
        if len(glimpse_shape) != 4:
            raise ValueError(f"glimpse_shape must be (k, C, g, g), got {glimpse_shape!r}")
        in_dim = int(torch.tensor(glimpse_shape).prod())
        self.glimpse_shape = tuple(glimpse_shape)
        self.what = nn.Linear(in_dim, what_dim)
        self.where = nn.Linear(2, where_dim)
        self.what_out = nn.Linear(what_dim, out_dim)
        self.where_out = nn.Linear(where_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, glimpse: Tensor, location: Tensor) -> Tensor:
        if tuple(glimpse.shape[1:]) != self.glimpse_shape:
            raise ValueError(
                f"glimpse must have shape (B, {', '.join(map(str, self.glimpse_shape))}), "
                f"got {tuple(glimpse.shape)}"
            )
        h_g = torch.relu(self.what(glimpse.flatten(1)))
        h_l = torch.relu(self.where(location))
        return torch.relu(self.what_out(h_g) + self.where_out(h_l))


class RAM(GlimpsePolicy):
    """The Recurrent Attention Model (Mnih et al. 2014).

    Args:
        glimpse_shape: ``(k, C, g, g)`` of the env's glimpse observation.
        num_classes: number of classes.
        hidden: core state size (256 in the paper).
        core: ``"rnn"`` (the paper's rectifier RNN) or ``"lstm"``.
        what_dim, where_dim, glimpse_dim: glimpse-network sizes (128, 128, 256).
        std, learn_std, location_bound: the location policy (:class:`GlimpsePolicy`).
        detach_baseline: stop the baseline's gradient at ``h_t``.
        detach_location: stop the location policy's gradient at ``h_t``, so REINFORCE
            trains only the location network and the core learns from classification.
            Without it (the paper's joint gradient) REINFORCE also trains the core and
            the glimpse network; the classifier and baseline heads never get its gradient.

    State: ``(B, hidden)`` for the RNN, ``(B, 2 * hidden)`` (``h`` and ``c``) for the LSTM.
    """

    def __init__(
        self,
        glimpse_shape: tuple[int, int, int, int],
        num_classes: int = 10,
        hidden: int = 256,
        core: Literal["rnn", "lstm"] = "rnn",
        what_dim: int = 128,
        where_dim: int = 128,
        glimpse_dim: int = 256,
        std: float = 0.15,
        learn_std: bool = False,
        location_bound: float = 1.0,
        detach_baseline: bool = True,
        detach_location: bool = False,
    ) -> None:
        super().__init__(num_classes, std, learn_std, location_bound)
        if core not in ("rnn", "lstm"):
            raise ValueError(f"core must be 'rnn' or 'lstm', got {core!r}")
        self.hidden = hidden
        self.core_type = core
        self.glimpse_net = GlimpseNetwork(glimpse_shape, what_dim, where_dim, glimpse_dim)
        if core == "rnn":
            self.core = nn.RNNCell(glimpse_dim, hidden, nonlinearity="relu")
        else:
            self.core = nn.LSTMCell(glimpse_dim, hidden)
        self.locator = nn.Linear(hidden, 2)
        self.classifier = nn.Linear(hidden, num_classes)
        self.baseline = nn.Linear(hidden, 1)
        self.detach_baseline = detach_baseline
        self.detach_location = detach_location

    @property
    def state_size(self) -> int:
        return self.hidden * (2 if self.core_type == "lstm" else 1)

    def initial_state(self, obs: dict[str, Tensor]) -> Tensor:
        glimpse = obs["glimpse"]
        return glimpse.new_zeros(glimpse.shape[0], self.state_size)

    def heads(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = self.glimpse_net(obs["glimpse"], obs["location"])
        if self.core_type == "rnn":
            h = self.core(g, state)
            new_state = h
        else:
            h, c = self.core(g, (state[:, : self.hidden], state[:, self.hidden :]))
            new_state = torch.cat([h, c], 1)
        mean = torch.tanh(self.locator(h.detach() if self.detach_location else h))
        mean = mean * self.location_bound
        logits = self.classifier(h)
        value = self.baseline(h.detach() if self.detach_baseline else h).squeeze(1)
        return new_state, mean, logits, value
