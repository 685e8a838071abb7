"""Backbones with registered attention blocks inserted at named points.

- :class:`SmallCNN`: a small conv net for the MNIST variants (28x28, 60x60 cluttered /
  translated, 100x100 cluttered), optionally behind a spatial transformer front end.
- :func:`resnet_with_attention`: a torchvision ResNet with a block on every residual branch,
  the way SE-ResNet places squeeze-and-excitation (Hu et al. 2018, *Squeeze-and-Excitation
  Networks*, Fig. 3).
- :func:`count_parameters`.

Attention blocks are built by name through ``soft_baselines.create``; only modules of kind
``"block"`` can be inserted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from soft_baselines._checks import check_positive_int
from soft_baselines.registry import create, get_entry, list_modules
from soft_baselines.stn import SpatialTransformer, check_size_pair

__all__ = ["RESNET_ARCHS", "SmallCNN", "count_parameters", "resnet_with_attention"]

RESNET_ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _resolve_attention(attention: str | None) -> str | None:
    """``None``/``"none"`` -> ``None``; a registered block name -> itself; else ``ValueError``."""
    if attention is None or attention == "none":
        return None
    if not isinstance(attention, str):
        raise ValueError(f"attention must be a registered name or None, got {attention!r}")
    entry = get_entry(attention)  # ValueError listing the valid names if unknown
    if entry.kind != "block":
        raise ValueError(
            f"attention {attention!r} is a {entry.kind}, not a drop-in block; valid blocks: "
            f"{', '.join(list_modules('block'))}"
        )
    return attention


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (only those with ``requires_grad`` if asked).

    Shared parameters are counted once.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]


class SmallCNN(nn.Module):
    """Small conv net for MNIST-like inputs, with optional attention blocks and STN front end.

    Layout (``K = len(widths)`` stages; stage ``k`` is called ``"stage{k}"``, 1-based)::

        [resize] -> [stn] -> stage1 -> [attention] -> stage2 -> [attention] -> ... -> GAP -> linear

    Each stage is ``convs_per_stage`` x (3x3 conv, BN, ReLU) followed by a 2x2 max-pool
    (``ceil_mode``, so odd sizes keep their edge). The attention block named by
    ``attention`` is inserted after every stage listed in ``insert_after``, i.e. on the
    pooled stage output, with that stage's width as ``channels``; the inserted modules are
    named ``"stage{k}_attention"`` in :attr:`features`. Global average pooling makes the net
    indifferent to the input size, so 28x28, 60x60 and 100x100 (and non-square) inputs work.

    Args:
        in_channels: image channels (1 for MNIST).
        num_classes: classifier outputs.
        input_size: ``(H, W)`` of the images; checked in :meth:`forward`, and the STN's
            ``input_size``.
        widths: channels of each stage.
        attention: a registered block name (``soft_baselines.list_modules("block")``), or
            ``None``/``"none"`` for the plain backbone.
        attention_kwargs: extra keyword arguments for every inserted block.
        insert_after: stage names after which a block is inserted.
        stn: keyword arguments for a :class:`~soft_baselines.stn.SpatialTransformer` front
            end (``in_channels`` and ``input_size`` are filled in; an ``output_size`` there
            is fine); ``None`` for no STN. Exposed as :attr:`stn`.
        convs_per_stage: conv-BN-ReLU layers per stage.
        resize_to: ``(H', W')``: area-downsample the input to this size before everything
            else (``F.interpolate(mode="area")``, i.e. the mean over each output pixel's
            footprint), so the network sees ``H' x W'`` pixels per channel (the
            ``lowres-cnn`` control of issue 17); ``None``: the input as it is.
    """

    stn: SpatialTransformer | None

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: tuple[int, int] = (28, 28),
        widths: Sequence[int] = (32, 64, 128),
        attention: str | None = None,
        attention_kwargs: Mapping[str, Any] | None = None,
        insert_after: Sequence[str] = ("stage2", "stage3"),
        stn: Mapping[str, Any] | None = None,
        convs_per_stage: int = 2,
        resize_to: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("convs_per_stage", convs_per_stage),
        ):
            check_positive_int(name, value)
        input_size = check_size_pair("input_size", input_size)
        widths = tuple(widths)
        if not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(
                f"widths must be a non-empty sequence of positive ints, got {widths!r}"
            )
        stage_names = [f"stage{k}" for k in range(1, len(widths) + 1)]
        if isinstance(insert_after, str):
            insert_after = (insert_after,)
        unknown = [s for s in insert_after if s not in stage_names]
        if unknown:
            raise ValueError(
                f"unknown insertion point(s) {unknown}; valid: {', '.join(stage_names)}"
            )
        attention = _resolve_attention(attention)
        if attention_kwargs is not None and not isinstance(attention_kwargs, Mapping):
            raise ValueError(f"attention_kwargs must be a mapping, got {attention_kwargs!r}")
        if stn is not None and not isinstance(stn, Mapping):
            raise ValueError(f"stn must be a mapping of SpatialTransformer kwargs, got {stn!r}")

        self.in_channels = in_channels
        self.input_size = input_size
        self.resize_to = None if resize_to is None else check_size_pair("resize_to", resize_to)
        self.attention = attention
        self.stn = (
            SpatialTransformer(in_channels, **{"input_size": self.seen_size, **dict(stn)})
            if stn is not None
            else None
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for name, width in zip(stage_names, widths, strict=True):
            stage: list[nn.Module] = []
            for i in range(convs_per_stage):
                stage += _conv_bn_relu(c_in if i == 0 else width, width)
            stage.append(nn.MaxPool2d(2, ceil_mode=True))
            layers[name] = nn.Sequential(*stage)
            if attention is not None and name in insert_after:
                layers[f"{name}_attention"] = create(
                    attention, width, **dict(attention_kwargs or {})
                )
            c_in = width
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, num_classes)

    @property
    def seen_size(self) -> tuple[int, int]:
        """``(H, W)`` the first layer sees: ``resize_to``, else ``input_size``."""
        return self.resize_to or self.input_size

    @property
    def pixels_seen(self) -> int:
        """Pixels per channel and image the network reads (``H x W`` of :attr:`seen_size`)."""
        h, w = self.seen_size
        return h * w

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, widths[-1], H_K, W_K)``: the downsampling (if
        ``resize_to``), STN (if any) and the stages."""
        if not isinstance(x, Tensor):
            raise TypeError(f"SmallCNN expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"SmallCNN expects input of shape (B, {self.in_channels}, {self.input_size[0]}, "
                f"{self.input_size[1]}), got {tuple(x.shape)}"
            )
        if self.resize_to is not None:
            x = F.interpolate(x, size=self.resize_to, mode="area")
        if self.stn is not None:
            x = self.stn(x)
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, num_classes)`` logits."""
        return self.head(self.pool(self.forward_features(x)).flatten(1))


def resnet_with_attention(
    arch: str = "resnet18",
    num_classes: int = 200,
    attention: str | None = None,
    pretrained: bool = False,
    attention_kwargs: Mapping[str, Any] | None = None,
) -> torchvision.models.ResNet:
    """A torchvision ResNet with an attention block on every residual branch.

    Placement (SE-ResNet style): in every ``BasicBlock`` / ``Bottleneck``, the last batch
    norm of the residual branch (``bn2`` / ``bn3``) is replaced by
    ``nn.Sequential(bn, block)``, so the block sees the branch output just before the
    shortcut is added: ``relu(shortcut(x) + block(bn(conv(...))))``. The block's
    ``channels`` is that branch's output width. ``attention=None``/``"none"`` leaves the
    ResNet unchanged apart from the classifier.

    Args:
        arch: one of ``RESNET_ARCHS``.
        num_classes: outputs of the new ``fc`` layer (always freshly initialised).
        attention: registered block name or ``None``.
        pretrained: load torchvision's ImageNet weights (``weights="DEFAULT"``; downloaded on
            first use) before inserting the blocks; the blocks themselves start from their
            own initialisation.
        attention_kwargs: extra keyword arguments for every inserted block.

    Shapes: ``(B, 3, H, W) -> (B, num_classes)``.
    """
    if arch not in RESNET_ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(RESNET_ARCHS)}")
    check_positive_int("num_classes", num_classes)
    attention = _resolve_attention(attention)
    if attention_kwargs is not None and not isinstance(attention_kwargs, Mapping):
        raise ValueError(f"attention_kwargs must be a mapping, got {attention_kwargs!r}")
    model = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None)
    if attention is not None:
        kwargs = dict(attention_kwargs or {})
        for module in model.modules():
            if isinstance(module, BasicBlock):
                module.bn2 = nn.Sequential(
                    module.bn2, create(attention, module.bn2.num_features, **kwargs)
                )
            elif isinstance(module, Bottleneck):
                module.bn3 = nn.Sequential(
                    module.bn3, create(attention, module.bn3.num_features, **kwargs)
                )
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
