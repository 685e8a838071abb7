"""Part-localization agent after Liu et al. (2016), *Fully Convolutional Attention Networks
for Fine-Grained Recognition* (FCAN).

- **Feature network**: a backbone turns the low-resolution whole image (the env's
  ``context`` view) into a feature map ``(B, D, h, w)``: a small CNN for the 100x100
  proxy, or a torchvision ResNet-18/50 (ImageNet weights optional) for CUB-200-2011.
- **Attention network**, fully convolutional: one 1x1 convolution gives a score map per
  part and per part-selection step, ``(B, S, K, h, w)``. The policy for part ``k`` at step
  ``s`` is the categorical distribution ``softmax`` over the ``h * w`` cells; the sampled
  cell's centre, mapped to ``[-1, 1]^2`` (:func:`cell_locations`, DESIGN.md convention),
  is the part location sent to the env, which returns the high-resolution crop from
  :mod:`glimpse.retina`.
- **Classification network**: a classifier on each part crop (shared trunk, one head per
  part) and one on the whole-image features; the prediction averages the logits of the
  whole image and of every part seen so far (:func:`combine_logits`).
- **Training**: classifiers by backpropagation (cross-entropy of every branch and of the
  combination), the attention by REINFORCE with FCAN's **greedy reward**
  (:func:`greedy_rewards`): each part at each step is paid at once by the gain it brings
  in the correct class's confidence, so no credit has to travel across steps.

Rollouts go through the env (:class:`envs.GlimpseVectorEnv` in parts mode,
``num_parts = K``): the agent never crops images itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.reinforce import ReinforceConfig
from envs import GlimpseVectorEnv
from glimpse import distributed

__all__ = [
    "PartsNet",
    "PartsRollout",
    "cell_locations",
    "collect_parts_rollout",
    "combine_logits",
    "greedy_rewards",
    "parts_loss",
    "predict_parts",
]

Backbone = Literal["small", "resnet18", "resnet50"]


# ---------------------------------------------------------------------------- backbones
def _small_trunk(
    in_channels: int, widths: tuple[int, int, int] = (32, 64, 128), pools: int = 1
) -> tuple[nn.Module, int]:
    """Three 3x3 conv-BN-ReLU layers, a 2x max-pool after each of the first ``pools``:
    stride ``2 ** pools``, ``widths[-1]`` channels."""
    layers: list[nn.Module] = []
    prev = in_channels
    for i, width in enumerate(widths):
        layers += [
            nn.Conv2d(prev, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        if i < pools:
            layers.append(nn.MaxPool2d(2))
        prev = width
    return nn.Sequential(*layers), prev


def _resnet_trunk(name: str, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    """A torchvision ResNet up to ``layer4`` (stride 32); ImageNet weights if ``pretrained``
    (downloaded by torchvision on first use). Grey-scale inputs are repeated to RGB."""
    import torchvision

    weights = "DEFAULT" if pretrained else None
    net = getattr(torchvision.models, name)(weights=weights)
    trunk = nn.Sequential(
        _ToRGB(in_channels),
        net.conv1,
        net.bn1,
        net.relu,
        net.maxpool,
        net.layer1,
        net.layer2,
        net.layer3,
        net.layer4,
    )
    return trunk, net.fc.in_features


class _ToRGB(nn.Module):
    """``[0, 1]`` images (1 or 3 channels) -> ImageNet-normalised RGB, as ResNets expect."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"a ResNet backbone needs 1 or 3 input channels, got {x.shape[1]}")
        return (x - self.mean) / self.std


def make_trunk(
    kind: Backbone, in_channels: int, pretrained: bool = False, part: bool = False
) -> tuple[nn.Module, int]:
    """``(trunk, out_channels)`` for ``kind`` in ``small``, ``resnet18``, ``resnet50``.

    ``small`` is stride 2 with widths 32-64-128 on the whole image (a fine score map), and
    stride 4 with widths 16-32-64 on part crops (``part=True``; cheap for many crops)."""
    if kind == "small":
        if pretrained:
            raise ValueError("pretrained weights exist only for the resnet18/resnet50 backbones")
        return _small_trunk(in_channels, (16, 32, 64), 2) if part else _small_trunk(in_channels)
    if kind in ("resnet18", "resnet50"):
        return _resnet_trunk(kind, in_channels, pretrained)
    raise ValueError(f"unknown backbone {kind!r}; valid: small, resnet18, resnet50")


# --------------------------------------------------------------------------- geometry
def cell_locations(
    height: int, width: int, image_hw: tuple[int, int] | None = None, device=None
) -> Tensor:
    """Centres of the ``height x width`` feature-map cells as locations ``(h*w, 2)``.

    Cell ``(i, j)`` (row-major index ``i * width + j``) is centred at ``x = (j + 0.5) /
    width * 2 - 1``, ``y = (i + 0.5) / height * 2 - 1`` of the context view. The context
    view (:func:`glimpse.retina.coarse_view`) is the image padded to a centred square, so
    for a non-square image ``image_hw = (H, W)`` the coordinates are rescaled to the image
    (``x * max(H, W) / W``) and clipped to ``[-1, 1]``.
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    if image_hw is not None:
        h, w = image_hw
        side = max(h, w)
        grid = grid * torch.tensor([side / w, side / h], device=device)
    return grid.clamp(-1.0, 1.0)


# ------------------------------------------------------------------------------ model
class PartsNet(nn.Module):
    """FCAN: feature map -> ``S * K`` score maps -> sampled part locations; part and
    whole-image classifiers (module docstring).

    Args:
        context_shape: ``(C, s, s)`` of the env's whole-image view.
        glimpse_shape: ``(K, k, C, g, g)`` of the env's part crops.
        num_classes: classes.
        steps: ``S`` part-selection steps (the env's ``num_glimpses - 1``).
        backbone: feature network on the context view.
        part_backbone: network on each part crop (default: ``backbone``).
        pretrained: ImageNet weights for ResNet backbones.
    """

    def __init__(
        self,
        context_shape: tuple[int, int, int],
        glimpse_shape: tuple[int, int, int, int, int],
        num_classes: int,
        steps: int = 1,
        backbone: Backbone = "small",
        part_backbone: Backbone | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if len(context_shape) != 3 or len(glimpse_shape) != 5:
            raise ValueError(
                f"need context_shape (C, s, s) and glimpse_shape (K, k, C, g, g), got "
                f"{context_shape} and {glimpse_shape}"
            )
        if steps < 1 or num_classes < 2:
            raise ValueError(f"need steps >= 1 and num_classes >= 2, got {steps}, {num_classes}")
        k_parts, scales, channels = glimpse_shape[:3]
        self.num_parts, self.steps, self.num_classes = k_parts, steps, num_classes
        self.features, dim = make_trunk(backbone, context_shape[0], pretrained)
        self.attention = nn.Conv2d(dim, steps * k_parts, 1)  # fully convolutional
        nn.init.zeros_(self.attention.weight)  # start uniform over the cells
        nn.init.zeros_(self.attention.bias)
        self.whole_head = nn.Linear(dim, num_classes)
        part_kind = part_backbone or backbone
        # Scales of a glimpse are stacked as channels; ResNets read only the finest scale.
        in_parts = scales * channels if part_kind == "small" else channels
        self._finest_only = part_kind != "small"
        self.part_trunk, part_dim = make_trunk(part_kind, in_parts, pretrained, part=True)
        # Small crops keep a 2x2 layout of their features (where in the crop matters).
        self._part_pool = 2 if part_kind == "small" else 1
        part_dim *= self._part_pool**2
        # Each head also reads where its crop was taken ((x, y), 2 numbers): which of two
        # similar parts it sees (left or right digit, left or right wing) can matter.
        self.part_heads = nn.ModuleList(
            nn.Linear(part_dim + 2, num_classes) for _ in range(k_parts)
        )

    def attend(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """``context (B, C, s, s)`` -> score logits ``(B, S, K, h, w)`` and whole-image
        logits ``(B, num_classes)``."""
        fmap = self.features(context)
        b, _, h, w = fmap.shape
        scores = self.attention(fmap).view(b, self.steps, self.num_parts, h, w)
        return scores, self.whole_head(fmap.mean((2, 3)))

    def classify_parts(self, glimpse: Tensor, location: Tensor) -> Tensor:
        """``glimpse (B, K, k, C, g, g)`` at ``location (B, K, 2)`` -> per-part logits
        ``(B, K, num_classes)``."""
        b, k = glimpse.shape[:2]
        g = glimpse.shape[-1]
        x = glimpse[:, :, :1] if self._finest_only else glimpse
        feats = self.part_trunk(x.reshape(b * k, -1, g, g))
        feats = F.adaptive_avg_pool2d(feats, self._part_pool).reshape(b, k, -1)
        feats = torch.cat([feats, location.to(feats)], -1)
        return torch.stack([head(feats[:, j]) for j, head in enumerate(self.part_heads)], 1)


def combine_logits(whole: Tensor, parts: list[Tensor]) -> Tensor:
    """The prediction from the whole image ``(B, C)`` and every part seen so far (each
    ``(B, K, C)``): the sum of the branches' log-probabilities (a product of experts, so
    an uninformative branch leaves the prediction unchanged)."""
    total = whole.log_softmax(-1)
    for p in parts:
        total = total + p.log_softmax(-1).sum(1)
    return total


def greedy_rewards(
    whole: Tensor,
    parts: Tensor,
    labels: Tensor,
    mode: Literal["delta", "indicator"] = "delta",
    scope: Literal["part", "step"] = "part",
) -> Tensor:
    """FCAN's greedy reward for every part of every step: ``(S, B, K)``.

    ``whole`` ``(B, C)`` whole-image logits, ``parts`` ``(S, B, K, C)`` part logits,
    ``labels`` ``(B,)``. With ``c_{s-1}`` the confidence (softmax probability) of the true
    class under :func:`combine_logits` of the whole image and every part of steps before
    ``s`` (``c_0``: the whole image alone), and ``c_{s,k}`` the same with part ``k`` of
    step ``s`` added (``softmax(log p_whole + sum log p_parts)``):

    - ``"delta"``: ``r_{s,k} = c_{s,k} - c_{s-1}``, the gain in the correct class's
      confidence that part ``k`` brings;
    - ``"indicator"``: ``r_{s,k} = 1`` if adding part ``k`` makes the prediction correct
      and raises the confidence (``c_{s,k} > c_{s-1} + 1e-6``), else 0.

    With ``scope="step"`` every part of step ``s`` gets the step's joint reward instead:
    ``c_{s,k}`` is replaced by ``c_s``, the confidence with *all* ``K`` parts of the step
    added (and the indicator by "the prediction with all of them is right"). That pays
    parts for being complementary; ``"part"`` pays each for its own gain.

    Liu et al. (2016) pay each step at once (greedily) for improving the classification
    instead of one reward at the end; every variant here does that. Returns a detached
    tensor.
    """
    if scope not in ("part", "step"):
        raise ValueError(f"unknown reward scope {scope!r}; valid: part, step")
    with torch.no_grad():
        steps = parts.shape[0]
        total = combine_logits(whole.float(), [])
        rows = torch.arange(len(labels), device=labels.device)
        prev = total.softmax(-1)[rows, labels]  # c_0 (B,)
        out = []
        for s in range(steps):
            p = parts[s].float().log_softmax(-1)  # (B, K, C)
            if scope == "part":
                probs = (total[:, None] + p).softmax(-1)  # with part k added: (B, K, C)
            else:  # every part of the step added, shared by the K parts
                probs = (total + p.sum(1)).softmax(-1)[:, None].expand_as(p)
            conf = probs.gather(2, labels[:, None, None].expand(-1, p.shape[1], 1))[..., 0]
            if mode == "delta":
                r = conf - prev[:, None]
            elif mode == "indicator":
                right = probs.argmax(-1) == labels[:, None]
                r = (right & (conf > prev[:, None] + 1e-6)).float()  # rounding is no gain
            else:
                raise ValueError(f"unknown reward mode {mode!r}; valid: delta, indicator")
            out.append(r)
            total = total + p.sum(1)
            prev = total.softmax(-1)[rows, labels]
        return torch.stack(out)


# ---------------------------------------------------------------------------- rollout
@dataclass
class PartsRollout:
    """One batch of part-localization episodes (``S`` steps, ``B`` episodes, ``K`` parts)."""

    whole_logits: Tensor
    """``(B, C)``."""
    part_logits: Tensor
    """``(S, B, K, C)``."""
    log_probs: Tensor
    """``(S, B, K)`` log-probability of each sampled cell."""
    entropies: Tensor
    """``(S, B, K)``."""
    locations: Tensor
    """``(S, B, K, 2)`` chosen part locations."""
    labels: Tensor
    """``(B,)`` true labels (from the env's ``info``)."""
    env_reward: Tensor
    """``(B,)`` the env's classification reward (1 if the submitted label was right)."""
    indices: Tensor
    """``(B,)`` dataset indices (from ``info``), for annotation look-ups in metrics."""

    @property
    def logits(self) -> Tensor:
        """``(B, C)`` the final combined prediction's logits."""
        return combine_logits(self.whole_logits, list(self.part_logits))

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(-1)


def _check_parts_env(venv: GlimpseVectorEnv, net: PartsNet) -> None:
    cfg = venv.config
    if not cfg.num_parts or cfg.num_targets != 1 or cfg.early_stop or cfg.relative:
        raise ValueError(
            "the parts agent needs a GlimpseVectorEnv in parts mode (num_parts >= 1) with one "
            "target, absolute locations and no early stop"
        )
    if cfg.num_parts != net.num_parts or cfg.num_glimpses != net.steps + 1:
        raise ValueError(
            f"env has K={cfg.num_parts}, T={cfg.num_glimpses} but the net was built for "
            f"K={net.num_parts} parts and {net.steps} steps (T = steps + 1)"
        )
    if venv.array_type != "torch":
        raise ValueError("the parts agent needs a GlimpseVectorEnv with array_type='torch'")


def collect_parts_rollout(
    net: PartsNet,
    venv: GlimpseVectorEnv,
    deterministic: bool = False,
    options: dict | None = None,
    generator: torch.Generator | None = None,
) -> PartsRollout:
    """Play ``venv.num_envs`` episodes: attend on the whole image, choose ``K`` parts per
    step (sampled, or the most likely cells if ``deterministic``), classify the crops the
    env returns, and finally submit the combined prediction to the env."""
    _check_parts_env(venv, net)
    obs, info = venv.reset(options=options)
    labels, indices = info["label"], info["index"]
    image_hw = tuple(venv.source.image_shape[1:])
    scores, whole = net.attend(obs["context"])
    b, steps, k, h, w = scores.shape
    centres = cell_locations(h, w, image_hw, device=scores.device)
    logps, ents, locs, part_logits = [], [], [], []
    for s in range(steps):
        dist = torch.distributions.Categorical(logits=scores[:, s].reshape(b, k, h * w))
        if deterministic:
            cell = dist.probs.argmax(-1)
        elif generator is not None:
            cell = torch.multinomial(dist.probs.reshape(b * k, -1), 1, generator=generator).view(
                b, k
            )
        else:
            cell = dist.sample()
        loc = centres[cell]  # (B, K, 2)
        obs, _, _, _, info = venv.step(
            {"location": loc, "label": torch.zeros(b, dtype=torch.long, device=loc.device)}
        )
        logps.append(dist.log_prob(cell))
        ents.append(dist.entropy())
        locs.append(loc)
        part_logits.append(net.classify_parts(obs["glimpse"], obs["location"]))
    pred = combine_logits(whole, part_logits).argmax(-1)
    _, reward, terminated, _, _ = venv.step({"location": locs[-1], "label": pred.detach()})
    if not bool(terminated.all()):
        raise RuntimeError("episodes did not end after the part-selection steps")
    return PartsRollout(
        whole,
        torch.stack(part_logits),
        torch.stack(logps),
        torch.stack(ents),
        torch.stack(locs),
        labels,
        reward,
        indices,
    )


def parts_loss(
    ro: PartsRollout,
    cfg: ReinforceConfig | None = None,
    reward: Literal["delta", "indicator"] = "delta",
    scope: Literal["part", "step"] = "part",
    sync_baseline: bool = False,
) -> tuple[Tensor, dict[str, float]]:
    """Hybrid FCAN loss: cross-entropy of the combined prediction, of the whole image and
    of every part crop (backpropagation), plus REINFORCE on the part locations with the
    greedy reward and a batch-mean baseline per step and part.

    The baseline is the one batch-global statistic of the loss: with ``sync_baseline``
    (data-parallel training, :mod:`glimpse.distributed`; every rank must call it) it is
    the mean over all ranks' equal batches, so the rank-averaged gradient is exactly that
    of the global batch. A no-op without a process group."""
    cfg = cfg or ReinforceConfig()
    labels = ro.labels
    s, b, k, c = ro.part_logits.shape
    combined = ro.logits
    ce_combined = F.cross_entropy(combined, labels)
    ce_whole = F.cross_entropy(ro.whole_logits, labels)
    ce_parts = F.cross_entropy(
        ro.part_logits.reshape(-1, c), labels[None, :, None].expand(s, b, k).reshape(-1)
    )
    ce = ce_combined + ce_whole + ce_parts
    r = greedy_rewards(ro.whole_logits.detach(), ro.part_logits.detach(), labels, reward, scope)
    baseline = r.mean(1, keepdim=True)  # the batch mean per (step, part)
    if sync_baseline:
        baseline = distributed.all_reduce(baseline, "mean")
    advantage = r - baseline
    policy_loss = -(advantage * ro.log_probs).sum((0, 2)).mean()
    entropy = ro.entropies.mean()
    loss = ce + cfg.policy_coef * policy_loss - cfg.entropy_coef * entropy
    metrics = {
        "losses/total": loss.item(),
        "losses/classification": ce_combined.item(),
        "losses/whole": ce_whole.item(),
        "losses/parts": ce_parts.item(),
        "losses/policy": policy_loss.item(),
        "losses/entropy": entropy.item(),
        "train/accuracy": (combined.argmax(-1) == labels).float().mean().item(),
        "train/reward": ro.env_reward.mean().item(),
        "train/greedy_reward": r.mean().item(),
        "charts/entropy_max": ro.entropies.max().item(),
    }
    return loss, metrics


@torch.no_grad()
def predict_parts(
    net: PartsNet, venv: GlimpseVectorEnv, indices: Tensor
) -> tuple[Tensor, PartsRollout]:
    """Deterministic predictions ``(n,)`` (most likely cells) for dataset ``indices``;
    ``venv.num_envs >= n`` (spare episodes replay the last image and are discarded)."""
    n = indices.numel()
    if n > venv.num_envs:
        raise ValueError(f"{n} images need num_envs >= {n}, got {venv.num_envs}")
    rep = indices
    if n < venv.num_envs:
        rep = torch.cat([indices, indices[-1:].expand(venv.num_envs - n)])
    was_training = net.training
    net.eval()
    try:
        ro = collect_parts_rollout(net, venv, deterministic=True, options={"indices": rep})
    finally:
        net.train(was_training)
    return ro.predictions[:n], ro
