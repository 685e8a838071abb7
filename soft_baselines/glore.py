"""Global reasoning unit: project to a graph, reason with a GCN, project back.

Chen, Rohrbach, Yan, Yan, Feng, Kalantidis (2019), *Graph-Based Global Reasoning Networks*
(CVPR 2019; arXiv:1811.12814). With ``X`` in ``R^{C x L}`` (``L = H * W`` positions):

- **Projection**: reduced states ``phi(X)`` (1x1 conv to ``S`` channels) and projection
  weights ``B = theta(X)`` (1x1 conv to ``K`` nodes); node features
  ``V = phi(X) B^T`` in ``R^{S x K}`` (each node a weighted sum of all positions).
- **Graph convolution**: ``Z = ((I - A_g) V^T W_g)``, i.e. node-wise diffusion by a learnt
  ``K x K`` adjacency ``A_g`` (a 1-D convolution across nodes) then a state update
  ``W_g`` (a 1-D convolution across states) with a ReLU.
- **Reprojection** with the same ``B``: ``Y = Z B`` in ``R^{S x L}``, a 1x1 convolution
  back to ``C`` channels with batch norm, added to ``X``.

Registered as ``"glore"``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from soft_baselines._checks import check_feature_map, check_positive_int
from soft_baselines.registry import register

__all__ = ["GloRe"]


@register("glore", spatial_map=True)
class GloRe(nn.Module):
    """GloRe unit: ``x + BN(W_e (GCN(phi(x) B^T) B))``, exactly the identity at init.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; cost linear in ``H * W``.

    Args:
        channels: ``C``.
        num_state: ``S``, width of the reduced states (default ``max(1, C // 2)``).
        num_node: ``K``, number of graph nodes (default ``max(1, C // 4)``).

    Initialisation: PyTorch defaults except the output batch norm, whose gamma and beta are
    zero, so the unit outputs its input exactly at init.
    """

    def __init__(
        self, channels: int, num_state: int | None = None, num_node: int | None = None
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        s = max(1, channels // 2) if num_state is None else num_state
        k = max(1, channels // 4) if num_node is None else num_node
        self.num_state = check_positive_int("num_state", s)
        self.num_node = check_positive_int("num_node", k)
        self.state = nn.Conv2d(channels, s, 1)  # phi
        self.proj = nn.Conv2d(channels, k, 1)  # theta: B
        self.adjacency = nn.Conv1d(k, k, 1, bias=False)  # A_g, across nodes
        self.state_update = nn.Conv1d(s, s, 1, bias=False)  # W_g, across states
        self.extend = nn.Conv2d(s, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def nodes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Node features ``V`` ``(B, S, K)`` and projection ``B`` ``(B, K, H*W)``."""
        check_feature_map(x, self.channels, type(self).__name__)
        state = self.state(x).flatten(2)  # (B, S, L)
        proj = self.proj(x).flatten(2)  # (B, K, L)
        return state @ proj.transpose(1, 2), proj

    def spatial_map(self, x: Tensor) -> Tensor:
        """How strongly each position takes part in the graph: ``Σ_k |B_kl|``, the total
        absolute projection weight of position ``l`` over the ``K`` nodes (the same ``B``
        gathers the node features and reprojects them), ``(B, C, H, W) -> (B, H, W)``.
        The projection is signed and unnormalised, hence the absolute value."""
        _, proj = self.nodes(x)
        b, _, h, w = x.shape
        return proj.to(torch.promote_types(proj.dtype, torch.float32)).abs().sum(1).view(b, h, w)

    def reason(self, v: Tensor) -> Tensor:
        """The GCN ``relu(W_g ((I - A_g) V^T)^T)``: ``(B, S, K) -> (B, S, K)``."""
        vt = v.transpose(1, 2)  # (B, K, S): nodes as channels
        diffused = vt - self.adjacency(vt)  # (I - A_g) V^T
        return torch.relu(self.state_update(diffused.transpose(1, 2)))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        v, proj = self.nodes(x)
        y = self.reason(v) @ proj  # (B, S, L)
        b, _, h, w = x.shape
        return x + self.bn(self.extend(y.view(b, self.num_state, h, w)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_state={self.num_state}, num_node={self.num_node}"
