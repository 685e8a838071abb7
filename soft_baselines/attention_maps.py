"""Where a soft-attention module looks: each block's own spatial map, through one hook.

The hook: ``with record_attention(model) as record: model(x)``. Inside the ``with``, every
registered attention module in ``model`` (the outermost ones: a block's registered parts,
e.g. DANet's PAM, are the block's business) stores its spatial attention map, one
``(B, h, w)`` tensor per call, in ``record.maps[path]`` (``path`` as in
``model.named_modules()``). Outside it nothing is attached: no hook, no branch in any
``forward``, so the hook costs nothing when unused.

How it works, and why the forward cannot change: a forward *pre*-hook hands the block's
inputs to its family's ``spatial_map`` method (declared at registration, see
:mod:`soft_baselines.registry`), under ``torch.no_grad``, before the block runs. The map is
the same function of the same input and weights as the forward's attention (recomputed,
so the fused fast paths never have to materialise it); the block's buffers (BatchNorm
statistics, EMANet's bases) and the random number generators are saved before and restored
after, and nothing is returned to the hook, so the forward's inputs, output, gradients and
state are those of a run without the hook (the tests check ``torch.equal``). Cost when on:
one extra partial forward of each block, and the ``N x N`` affinity where a family's map
needs it (memory ``O(B N^2)`` for non-local-style blocks).

One map over the input image: :func:`soft_attention_map` runs ``model(images)`` under the
hook and turns each block's map into a distribution over the input (negatives clamped to
zero, bilinear upsampling, ``align_corners=False``, to ``H x W``, normalised to sum 1:
:func:`glimpse.attention.to_image_distribution`), so it is scored (``mass_in_boxes``,
``pointing_hits``) and drawn by the same code as hard agents' footprints and Grad-CAM.

What each registered module's map is (each family's ``spatial_map`` docstring says it
exactly). "Received": the attention each position receives, i.e. the column sums of the
affinity over all queries (or its family's analogue).

======================  ==================================================================
module                  spatial map
======================  ==================================================================
``a2``                  mean of the ``n`` gather maps ``softmax(B)`` over positions
``afnb``, ``apnb``      received by the pyramid anchors, spread over the pixels each
                        anchor averages (keys' map: ``low`` for AFNB)
``apc``                 received by the pooled regions of every ACM, spread over each
                        region, mean over scales
``bam``                 the gate ``sigmoid(Mc + Ms)`` averaged over channels
``cam``                 **no spatial map** (attention over channels)
``cbam``                the spatial gate ``Ms`` (none if built with ``spatial=False``)
``cc``                  received along rows and columns, mean over the ``R`` passes
``cgnl``                received per element of the generalized kernel, summed over the
                        channels at each position (signed for the dot kernel)
``danet``               PAM's map (CAM adds nothing spatial)
``dgmn``                node affinities spread over the bilinear reads of the sampled
                        nodes, mean over neighbourhoods
``eca``                 **no spatial map** (channel gates)
``ema``                 received through the reconstruction's effective affinity
                        ``Z diag(1 / (Σ Z ‖m_k‖)) Zᵀ``
``gc``                  the context weights ``alpha`` (shared by every query; none with
                        ``pooling="avg"``)
``glore``               total absolute projection weight onto the graph nodes
``isa``                 received through both stages, ``(1ᵀ A_short) A_long``
``latentgnn``           received through ``Phi A Psi^T``
``local_relation``      received in the ``k x k`` windows, mean over heads
``nonlocal``            received by each key (keys' grid with ``sub_sample``)
``oc_asp``              received in the object-context branch
``oc_base``             received
``oc_pyramid``          received within each region, mean over scales
``pam``                 received
``polarized``           the spatial-only gate ``A_sp``
``psanet``              received through collect + distribute (signed)
``residual_attention``  the soft mask ``M`` averaged over channels
``rnl``                 received (region descriptors' affinity)
``san_pairwise``,       received in the footprints, mean over weight groups
``san_patchwise``
``se``                  **no spatial map** (channel gates)
``sk``                  **no spatial map** (per-channel selection between branches)
``stn``                 the sampling grid's footprint on its input (bilinear weights)
======================  ==================================================================

Channel-only modules declare ``spatial_map=False`` in the registry; they never get a map.
GCNet's block is listed by issue 18 among the channel-only ones because its *output* is a
channel-wise modulation, but it does attend over positions (``alpha``, a softmax over all
positions, GCNet's query-independent non-local map), so it declares that map.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from glimpse.attention import to_image_distribution
from soft_baselines.registry import Entry, entry_of

__all__ = [
    "AttentionRecord",
    "attention_blocks",
    "record_attention",
    "soft_attention_map",
    "spatial_map_blocks",
]


@dataclass
class AttentionRecord:
    """What :func:`record_attention` collected.

    ``maps``: module path -> one ``(B, h, w)`` map (detached, the block's own resolution,
    raw: not clamped or normalised) per call of that block. ``without``: module path ->
    why that registered module gave no map (channel-only family, or an instance built
    without its spatial part).
    """

    maps: dict[str, list[Tensor]] = field(default_factory=dict)
    without: dict[str, str] = field(default_factory=dict)


def attention_blocks(model: nn.Module) -> list[tuple[str, nn.Module, Entry]]:
    """The registered attention modules of ``model`` (``model`` itself included), the
    outermost ones only: ``(path, module, registry entry)`` in ``named_modules`` order."""
    found: list[tuple[str, nn.Module, Entry]] = []
    for path, module in model.named_modules():
        entry = entry_of(module)
        if entry is None:
            continue
        if any(path.startswith(f"{outer}.") or outer == "" for outer, _, _ in found):
            continue  # a part of a registered block
        found.append((path, module, entry))
    return found


def spatial_map_blocks(model: nn.Module) -> list[str]:
    """Paths of the registered modules of ``model`` whose family declares a spatial map
    (an instance may still have none, e.g. ``CBAM(spatial=False)``)."""
    return [path for path, _, entry in attention_blocks(model) if entry.spatial_map]


@contextlib.contextmanager
def _state_kept(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Restore ``module``'s buffers and the RNG state of ``device`` (and the CPU) on exit."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)


def _keep(
    record: AttentionRecord,
    path: str,
    entry: Entry,
    module: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    x = args[0] if args else next(iter(kwargs.values()))
    with torch.no_grad(), _state_kept(module, x.device):
        m = module.spatial_map(*args, **kwargs)  # type: ignore[operator]
    if m is None:
        record.without[path] = f"{entry.name}: this instance has no spatial part"
        return
    if not isinstance(m, Tensor) or m.ndim != 3 or m.shape[0] != x.shape[0]:
        shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise ValueError(f"{entry.name}.spatial_map must return (B, h, w), got {shape}")
    record.maps.setdefault(path, []).append(m.detach())


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecord]:
    """Within the ``with``, every registered attention module of ``model`` records its
    spatial map on each call (module docstring); yields the :class:`AttentionRecord`.

    Modules whose family declares no spatial map are listed in ``record.without`` and
    get no hook. The hooks are removed on exit, also after an exception.
    """
    record = AttentionRecord()
    handles = []
    try:
        for path, module, entry in attention_blocks(model):
            if not entry.spatial_map:
                why = "undeclared" if entry.spatial_map is None else "channel attention only"
                record.without[path] = f"{entry.name}: no spatial map ({why})"
                continue
            hook = functools.partial(_keep, record, path, entry)
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        yield record
    finally:
        for handle in handles:
            handle.remove()


def soft_attention_map(
    model: nn.Module, images: Tensor, block: str | None = None
) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Where a soft model looks: its attention modules' own maps over the input image.

    Runs ``model(images)`` once (``images (B, C, H, W)``, under ``torch.no_grad``; the
    model's mode is left as is: call ``model.eval()`` first for evaluation maps, since a
    forward in training mode updates BatchNorm statistics as any forward does) under
    :func:`record_attention`. Returns ``(maps, raw)``:

    - ``raw``: module path -> that block's map ``(B, h, w)`` at its own resolution, as its
      family defines it (a block called ``k > 1`` times adds ``path#1`` .. ``path#k-1``);
    - ``maps (B, H, W)``: each raw map with negatives clamped to zero, upsampled
      bilinearly (``align_corners=False``) to ``H x W`` and normalised to sum 1 (a map
      zero everywhere becomes uniform), then the mean over the blocks (``block=None``) or
      the block ``block`` (a key of ``raw``) alone; ``None`` when no module of ``model``
      has a spatial map (a plain CNN, channel-only modules, ``CBAM(spatial=False)``).

    Raises ``ValueError`` for images that are not ``(B, C, H, W)`` or a ``block`` that
    gave no map.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (B, C, H, W), got {shape}")
    with record_attention(model) as record, torch.no_grad():
        model(images)
    raw = {
        (path if i == 0 else f"{path}#{i}"): m
        for path, calls in record.maps.items()
        for i, m in enumerate(calls)
    }
    if block is not None:
        if block not in raw:
            why = "; ".join(f"{p or '<model>'}: {w}" for p, w in record.without.items())
            raise ValueError(
                f"no spatial map from block {block!r}; maps from: {', '.join(raw) or 'none'}"
                + (f" (without: {why})" if why else "")
            )
        chosen = [raw[block]]
    else:
        chosen = list(raw.values())
    if not chosen:
        return None, raw
    h, w = images.shape[-2:]
    work = torch.promote_types(images.dtype, torch.float32)
    dists = [to_image_distribution(m.to(work), h, w) for m in chosen]
    return torch.stack(dists).mean(dim=0), raw
