"""DRAM: the deep recurrent attention model of Ba, Mnih and Kavukcuoglu (2015),
*Multiple Object Recognition with Visual Attention*.

Networks (paper section 3), with the glimpse and the coarse context view coming from the
env (the agent never crops images itself):

- glimpse network: ``g_n = G_image(x_n) * G_loc(l_n)`` -- "what" (an MLP on the glimpse
  here, where the paper uses convolutions for SVHN) times "where", element-wise;
- recurrent network: two stacked LSTMs. The lower one ``r^(1)`` integrates glimpses and
  feeds the classification network; the upper one ``r^(2)`` feeds the emission network;
- context network: a small CNN on the coarse view of the whole image (the env's
  ``context`` observation) giving the initial state of ``r^(2)``, so that the first
  location is chosen knowing roughly where the objects are;
- emission network: the next location ``N(tanh(Linear(r^(2))), sigma^2)``, clipped to the
  box (:mod:`agents.distributions`);
- classification network: ``softmax(Linear(r^(1)))``, read after every ``T`` glimpses for
  the next object in the sequence (left to right on MultiMNIST);
- baseline: ``Linear(r^(2))`` on a detached state.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agents.policy import GlimpsePolicy

__all__ = ["DRAM"]


class DRAM(GlimpsePolicy):
    """The deep recurrent attention model (Ba et al. 2015).

    Args:
        glimpse_shape: ``(k, C, g, g)`` of the env's glimpse observation.
        context_shape: ``(C, s, s)`` of the env's ``context`` observation.
        num_classes: classes per object.
        hidden: size of each LSTM layer and of the glimpse feature.
        std, learn_std, location_bound: the location policy (:class:`GlimpsePolicy`).
        detach_location: feed ``r^(2)`` a detached ``r^(1)`` state, so REINFORCE trains
            the location pathway (context network, ``r^(2)``, emission network) and
            classification trains the glimpse network, ``r^(1)`` and the classifier, with
            no gradient crossing between them. ``False``: the paper's joint gradient
            (REINFORCE also reaches ``r^(1)`` and the glimpse network).

    State: ``(B, 4 * hidden)`` holding ``h1, c1, h2, c2``.
    """

    def __init__(
        self,
        glimpse_shape: tuple[int, int, int, int],
        context_shape: tuple[int, int, int],
        num_classes: int = 10,
        hidden: int = 256,
        std: float = 0.15,
        learn_std: bool = False,
        location_bound: float = 1.0,
        detach_location: bool = True,
    ) -> None:
        super().__init__(num_classes, std, learn_std, location_bound)
        if len(glimpse_shape) != 4 or len(context_shape) != 3:
            raise ValueError(
                f"glimpse_shape must be (k, C, g, g) and context_shape (C, s, s); got "
                f"{glimpse_shape!r} and {context_shape!r}"
            )
        self.glimpse_shape = tuple(glimpse_shape)
        self.context_shape = tuple(context_shape)
        self.hidden = hidden
        in_dim = int(torch.tensor(glimpse_shape).prod())
        self.what = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.where = nn.Sequential(nn.Linear(2, hidden), nn.ReLU())
        self.rnn1 = nn.LSTMCell(hidden, hidden)
        self.rnn2 = nn.LSTMCell(hidden, hidden)
        c = context_shape[0]
        self.context = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4, hidden),
            nn.Tanh(),
        )
        self.emission = nn.Linear(hidden, 2)
        self.classifier = nn.Linear(hidden, num_classes)
        self.baseline = nn.Linear(hidden, 1)
        self.detach_location = detach_location

    def initial_state(self, obs: dict[str, Tensor]) -> Tensor:
        if "context" not in obs:
            raise ValueError(
                "DRAM needs the env's 'context' observation; build the env with context_size > 0"
            )
        ctx = obs["context"]
        if tuple(ctx.shape[1:]) != self.context_shape:
            raise ValueError(
                f"context must have shape (B, {self.context_shape}), got {tuple(ctx.shape)}"
            )
        b = ctx.shape[0]
        zeros = ctx.new_zeros(b, self.hidden)
        return torch.cat([zeros, zeros, self.context(ctx), zeros], 1)

    def heads(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        glimpse = obs["glimpse"]
        if tuple(glimpse.shape[1:]) != self.glimpse_shape:
            raise ValueError(
                f"glimpse must have shape (B, {self.glimpse_shape}), got {tuple(glimpse.shape)}"
            )
        h1, c1, h2, c2 = state.split(self.hidden, dim=1)
        g = self.what(glimpse.flatten(1)) * self.where(obs["location"])
        h1, c1 = self.rnn1(g, (h1, c1))
        h2, c2 = self.rnn2(h1.detach() if self.detach_location else h1, (h2, c2))
        mean = torch.tanh(self.emission(h2)) * self.location_bound
        logits = self.classifier(h1)
        value = self.baseline(h2.detach()).squeeze(1)
        return torch.cat([h1, c1, h2, c2], 1), mean, logits, value
