"""Spatial transformer: a learned, differentiable affine warp of the input image.

Jaderberg, Simonyan, Zisserman, Kavukcuoglu (2015), *Spatial Transformer Networks*
(NeurIPS 2015). A localisation network regresses the parameters ``theta`` of a 2x3 affine
map; a grid generator maps every output pixel to a sampling point of the input
(``[x_s, y_s] = theta @ [x_t, y_t, 1]``, normalised coordinates), and a bilinear sampler
reads the input there. The paper's "attention" variant restricts ``theta`` to isotropic
scale and translation, ``[[s, 0, t_x], [0, s, t_y]]``.

Coordinates follow the project convention: ``(x, y)`` in ``[-1, 1]``, ``(-1, -1)`` the
top-left corner of the top-left pixel, i.e. ``F.affine_grid``/``F.grid_sample`` with
``align_corners=False``; samples outside the image read as zero. A translation
``t_x = 2 k / W`` makes output pixel ``c`` read input pixel ``c + k``, so the content moves
``k`` pixels to the *left*.

Registered as ``"stn"`` (kind ``"transform"``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soft_baselines._checks import check_positive_int
from soft_baselines._maps import adjoint
from soft_baselines.registry import register

__all__ = ["SpatialTransformer", "check_size_pair", "theta_from_params", "warp"]

Mode = Literal["affine", "attention"]
_NUM_PARAMS = {"affine": 6, "attention": 3}
_IDENTITY_PARAMS = {"affine": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "attention": (1.0, 0.0, 0.0)}


def check_size_pair(name: str, value: object) -> tuple[int, int]:
    """``value`` as ``(int, int)`` if it is a pair of positive ints; else ``ValueError``."""
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ValueError(f"{name} must be a pair of positive ints (H, W), got {value!r}")
    return int(value[0]), int(value[1])


def theta_from_params(params: Tensor, mode: Mode) -> Tensor:
    """Affine matrices from regressed parameters: ``(B, 6 | 3) -> (B, 2, 3)``.

    ``"affine"``: the six entries row-major. ``"attention"``: ``(s, t_x, t_y)`` ->
    ``[[s, 0, t_x], [0, s, t_y]]``.
    """
    if mode not in _NUM_PARAMS:
        raise ValueError(f"mode must be 'affine' or 'attention', got {mode!r}")
    n = _NUM_PARAMS[mode]
    if params.ndim != 2 or params.shape[1] != n:
        raise ValueError(f"{mode} mode expects params of shape (B, {n}), got {tuple(params.shape)}")
    if mode == "affine":
        return params.view(-1, 2, 3)
    s, tx, ty = params.unbind(dim=1)
    zero = torch.zeros_like(s)
    return torch.stack([s, zero, tx, zero, s, ty], dim=1).view(-1, 2, 3)


def warp(x: Tensor, theta: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
    """Sample ``x`` ``(B, C, H, W)`` on the grid of ``theta`` ``(B, 2, 3)``.

    Returns ``(B, C, H', W')`` with ``(H', W') = output_size`` (default ``(H, W)``);
    bilinear, zeros outside, ``align_corners=False``. ``theta`` is cast to ``x``'s dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"warp expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    if theta.ndim != 3 or theta.shape[1:] != (2, 3) or theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"warp expects theta of shape ({x.shape[0]}, 2, 3), got {tuple(theta.shape)}"
        )
    h, w = x.shape[2:] if output_size is None else check_size_pair("output_size", output_size)
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@register("stn", kind="transform", spatial_map=True)
class SpatialTransformer(nn.Module):
    """Spatial transformer: localisation net -> affine ``theta`` -> bilinear resampling.

    Shapes: ``(B, C, H, W) -> (B, C, H', W')`` with ``(H, W) = input_size`` and
    ``(H', W') = output_size``.

    Args:
        in_channels: ``C``.
        input_size: ``(H, W)`` of the inputs; checked in :meth:`forward`. ``None`` accepts
            any size (the localisation net ends in adaptive pooling).
        output_size: ``(H', W')`` of the warped output (default: the input's size).
        mode: ``"affine"`` (6 parameters) or ``"attention"`` (isotropic scale + translation).
        loc_channels: widths of the localisation net's two conv layers (5x5, ReLU, 2x2
            max-pool each).
        loc_hidden: width of its hidden fully connected layer.
        loc_grid: the conv features are adaptively max-pooled to this ``(h, w)`` grid before
            the fully connected layers, so the net fits any input size.

    Initialisation: the last fully connected layer has zero weight and the identity
    transform as bias, so ``theta`` starts as the identity for every input and, with equal
    input and output sizes, the module returns its input (up to float rounding).

    After each call, :attr:`last_theta` holds the ``(B, 2, 3)`` matrices just used
    (detached), for logging the transformed images.
    """

    last_theta: Tensor | None

    def __init__(
        self,
        in_channels: int,
        input_size: tuple[int, int] | None = None,
        output_size: tuple[int, int] | None = None,
        mode: Mode = "affine",
        loc_channels: tuple[int, int] = (8, 16),
        loc_hidden: int = 32,
        loc_grid: tuple[int, int] = (7, 7),
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        if mode not in _NUM_PARAMS:
            raise ValueError(f"mode must be 'affine' or 'attention', got {mode!r}")
        self.input_size = None if input_size is None else check_size_pair("input_size", input_size)
        self.output_size = (
            None if output_size is None else check_size_pair("output_size", output_size)
        )
        c1, c2 = check_size_pair("loc_channels", loc_channels)
        gh, gw = check_size_pair("loc_grid", loc_grid)
        check_positive_int("loc_hidden", loc_hidden)
        self.in_channels = in_channels
        self.mode = mode
        self.localisation = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d((gh, gw)),
            nn.Flatten(),
            nn.Linear(c2 * gh * gw, loc_hidden),
            nn.ReLU(inplace=True),
        )
        self.fc_theta = nn.Linear(loc_hidden, _NUM_PARAMS[mode])
        self.reset_theta()
        self.last_theta = None

    def reset_theta(self) -> None:
        """Zero weight and identity bias in the regression layer: ``theta`` = identity."""
        nn.init.zeros_(self.fc_theta.weight)
        with torch.no_grad():
            self.fc_theta.bias.copy_(torch.tensor(_IDENTITY_PARAMS[self.mode]))

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"SpatialTransformer expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SpatialTransformer expects input of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        if self.input_size is not None and tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"SpatialTransformer was built for input_size={self.input_size}, "
                f"got spatial size {tuple(x.shape[2:])}"
            )

    def theta(self, x: Tensor) -> Tensor:
        """Affine matrices for a batch: ``(B, C, H, W) -> (B, 2, 3)``."""
        self._check_input(x)
        return theta_from_params(self.fc_theta(self.localisation(x)), self.mode)

    def transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W) -> (warped (B, C, H', W'), theta (B, 2, 3))``; sets :attr:`last_theta`."""
        theta = self.theta(x)
        self.last_theta = theta.detach()
        return warp(x, theta, self.output_size), theta

    def spatial_map(self, x: Tensor) -> Tensor:
        """The sampling grid's footprint on the input, ``(B, C, H, W) -> (B, H, W)``: every
        output pixel's sampling point spreads one unit of mass over the input pixels the
        bilinear sampler reads it from, with the sampler's weights (the adjoint of
        :func:`warp`); points outside the image carry their mass off the map. Sums to the
        number of output pixels when the whole grid lies inside. Leaves
        :attr:`last_theta` as it is."""
        theta = self.theta(x).detach()
        b, _, h, w = x.shape
        ho, wo = (h, w) if self.output_size is None else self.output_size
        work = torch.promote_types(x.dtype, torch.float32)
        ones = torch.ones(b, 1, ho, wo, dtype=work, device=x.device)
        return adjoint(lambda p: warp(p, theta, self.output_size), ones, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H', W')``, the warped input."""
        return self.transform(x)[0]

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, mode={self.mode!r}, "
            f"input_size={self.input_size}, output_size={self.output_size}"
        )
