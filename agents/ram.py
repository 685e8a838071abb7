"""RAM: the Recurrent Attention Model of Mnih, Heess, Graves and Kavukcuoglu (2014),
*Recurrent Models of Visual Attention*.

Networks (paper section 4, "Architecture"), with ``rho(x, l)`` the glimpse the env returns:

- glimpse network ``f_g``: ``h_g = Rect(Linear(rho(x, l)))`` (128), ``h_l = Rect(Linear(l))``
  (128), ``g = Rect(Linear(h_g) + Linear(h_l))`` (256): "what" and "where" combined.
  ``glimpse_net="conv"`` (the ``ram-conv`` control of issue 17,
  :class:`ConvGlimpseNetwork`) puts a small conv stack per scale in place of the "what"
  MLP and keeps the "where" pathway, so the hard agent reads its pixels with convolutions
  as the soft CNNs do;
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

__all__ = ["GLIMPSE_NETS", "RAM", "ConvGlimpseNetwork", "GlimpseNetwork"]

GLIMPSE_NETS = ("mlp", "conv")
"""The glimpse networks of :class:`RAM`: the paper's MLP, or a conv stack per scale."""


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
        self.glimpse_shape = tuple(glimpse_shape)
        self.what = self.build_what(what_dim)
        self.where = nn.Linear(2, where_dim)
        self.what_out = nn.Linear(what_dim, out_dim)
        self.where_out = nn.Linear(where_dim, out_dim)
        self.out_dim = out_dim

    def build_what(self, what_dim: int) -> nn.Module:
        """The "what" layer on the flattened glimpse: ``Linear(k * C * g * g, what_dim)``."""
        return nn.Linear(int(torch.tensor(self.glimpse_shape).prod()), what_dim)

    def what_features(self, glimpse: Tensor) -> Tensor:
        """``(B, k, C, g, g) -> (B, what_dim)``: ``Rect(Linear(glimpse))``."""
        return torch.relu(self.what(glimpse.flatten(1)))

    def forward(self, glimpse: Tensor, location: Tensor) -> Tensor:
        if tuple(glimpse.shape[1:]) != self.glimpse_shape:
            raise ValueError(
                f"glimpse must have shape (B, {', '.join(map(str, self.glimpse_shape))}), "
                f"got {tuple(glimpse.shape)}"
            )
        h_g = self.what_features(glimpse)
        h_l = torch.relu(self.where(location))
        return torch.relu(self.what_out(h_g) + self.where_out(h_l))


class ConvGlimpseNetwork(GlimpseNetwork):
    """``f_g`` with convolutions: ``(glimpse (B, k, C, g, g), location (B, 2)) -> (B, out_dim)``.

    "What": per scale its own conv stack (a grouped convolution over the ``k`` scales, so
    scales share no weights), ``conv3x3(C -> c1) -> ReLU -> conv3x3/2(c1 -> c2) -> ReLU ->
    conv3x3/2(c2 -> c2) -> ReLU`` (padding 1, ``(c1, c2) =`` :attr:`CHANNELS`; ``g = 8``
    gives ``2 x 2`` maps, ``g = 12`` gives ``3 x 3``), flattened over the scales into
    ``Rect(Linear(.))`` of ``what_dim``. "Where" and the combination are those of
    :class:`GlimpseNetwork`.
    """

    CHANNELS: tuple[int, int] = (16, 32)
    """``(c1, c2)``: channels per scale of the conv stack."""

    def build_what(self, what_dim: int) -> nn.Module:
        k, c, g, _ = self.glimpse_shape
        c1, c2 = self.CHANNELS
        side = ((g + 1) // 2 + 1) // 2  # two stride-2 convolutions, padding 1
        return nn.Sequential(
            nn.Conv2d(k * c, k * c1, 3, padding=1, groups=k),
            nn.ReLU(),
            nn.Conv2d(k * c1, k * c2, 3, stride=2, padding=1, groups=k),
            nn.ReLU(),
            nn.Conv2d(k * c2, k * c2, 3, stride=2, padding=1, groups=k),
            nn.ReLU(),
            nn.Flatten(1),
            nn.Linear(k * c2 * side * side, what_dim),
        )

    def what_features(self, glimpse: Tensor) -> Tensor:
        """``(B, k, C, g, g) -> (B, what_dim)``: the conv stacks (the ``k * C`` channels
        grouped by scale), then the linear layer."""
        return torch.relu(self.what(glimpse.flatten(1, 2)))


class RAM(GlimpsePolicy):
    """The Recurrent Attention Model (Mnih et al. 2014).

    Args:
        glimpse_shape: ``(k, C, g, g)`` of the env's glimpse observation.
        num_classes: number of classes.
        hidden: core state size (256 in the paper).
        core: ``"rnn"`` (the paper's rectifier RNN) or ``"lstm"``.
        what_dim, where_dim, glimpse_dim: glimpse-network sizes (128, 128, 256).
        glimpse_net: ``"mlp"`` (:class:`GlimpseNetwork`, the paper's) or ``"conv"``
            (:class:`ConvGlimpseNetwork`).
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
        glimpse_net: Literal["mlp", "conv"] = "mlp",
    ) -> None:
        super().__init__(num_classes, std, learn_std, location_bound)
        if core not in ("rnn", "lstm"):
            raise ValueError(f"core must be 'rnn' or 'lstm', got {core!r}")
        if glimpse_net not in GLIMPSE_NETS:
            raise ValueError(f"glimpse_net must be one of {GLIMPSE_NETS}, got {glimpse_net!r}")
        self.hidden = hidden
        self.core_type = core
        net = ConvGlimpseNetwork if glimpse_net == "conv" else GlimpseNetwork
        self.glimpse_net = net(glimpse_shape, what_dim, where_dim, glimpse_dim)
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

    def integrate(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor]:
        """Glimpse network and core: returns ``(new_state, h_t)``, ``h_t`` ``(B, hidden)``."""
        g = self.glimpse_net(obs["glimpse"], obs["location"])
        if self.core_type == "rnn":
            h = self.core(g, state)
            return h, h
        h, c = self.core(g, (state[:, : self.hidden], state[:, self.hidden :]))
        return torch.cat([h, c], 1), h

    def heads(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        new_state, h = self.integrate(obs, state)
        mean = torch.tanh(self.locator(h.detach() if self.detach_location else h))
        if self.location_bound != 1.0:  # x * 1.0 is x, bit for bit (and so its gradient)
            mean = mean * self.location_bound
        logits = self.classifier(h)
        value = self.baseline(h.detach() if self.detach_baseline else h).squeeze(1)
        return new_state, mean, logits, value
