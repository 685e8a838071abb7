"""One evaluation for every model, hard or soft, so the comparison is honest by construction.

A model is evaluated through a ``predict(indices) -> predictions`` function over a split's
dataset indices, visited once each, in order, in batches. Hard agents answer by playing
episodes on those images through the env; soft models by a forward pass. The metrics are
computed here and only here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from glimpse import distributed
from glimpse.training import progress

__all__ = ["accuracy_metrics", "evaluate", "evaluate_sharded", "readout_metrics"]


def accuracy_metrics(predictions: Tensor, labels: Tensor) -> dict[str, float]:
    """``accuracy`` and ``error`` (percent-free fractions) and ``n``.

    For sequence labels ``(N, L)`` (MultiMNIST), ``accuracy`` is the fraction of
    sequences entirely right and ``digit_accuracy`` the fraction of single labels right.
    """
    predictions = predictions.reshape(labels.shape).to(labels.device)
    right = predictions == labels
    if labels.ndim == 1:
        acc = right.float().mean().item()
        return {"accuracy": acc, "error": 1 - acc, "n": labels.shape[0]}
    acc = right.all(1).float().mean().item()
    return {
        "accuracy": acc,
        "error": 1 - acc,
        "digit_accuracy": right.float().mean().item(),
        "n": labels.shape[0],
    }


def readout_metrics(predictions: Tensor, labels: Tensor) -> dict[str, Any]:
    """Metrics of a model read out after each of ``T`` steps (a glimpse agent's classifier
    after every glimpse): ``predictions`` ``(N, T)``, ``labels`` ``(N,)``. ``accuracy``,
    ``error`` and ``n`` are those of the last readout (the model's prediction);
    ``errors_by_step`` lists the error after ``1 .. T`` steps."""
    if predictions.ndim != 2 or labels.ndim != 1 or predictions.shape[0] != labels.shape[0]:
        raise ValueError(
            f"readouts must be (N, T) with labels (N,), got {tuple(predictions.shape)} and "
            f"{tuple(labels.shape)}"
        )
    right = predictions.to(labels.device) == labels[:, None]
    out: dict[str, Any] = accuracy_metrics(predictions[:, -1], labels)
    out["errors_by_step"] = (1 - right.float().mean(0)).tolist()
    return out


@torch.no_grad()
def evaluate(
    predict: Callable[[Tensor], Tensor],
    labels: Tensor,
    batch_size: int = 1000,
    desc: str = "eval",
    metrics: Callable[[Tensor, Tensor], dict[str, Any]] = accuracy_metrics,
) -> dict[str, Any]:
    """Metrics of ``predict`` on every index ``0..N-1`` of a split whose labels are ``labels``.

    ``predict`` receives a CPU long tensor of ``n <= batch_size`` indices and returns their
    predicted labels ``(n,)`` (or ``(n, L)``; or ``(n, T)`` readouts with ``metrics`` =
    :func:`readout_metrics`); ``metrics(predictions, labels)`` computes the result.
    """
    n = labels.shape[0]
    preds = []
    starts = range(0, n, batch_size)
    for start in progress(starts, total=len(starts), desc=desc, leave=False):
        idx = torch.arange(start, min(start + batch_size, n))
        out = predict(idx)
        if out.shape[0] != idx.numel():
            raise ValueError(f"predict returned {out.shape[0]} predictions for {idx.numel()}")
        preds.append(out.cpu())
    return metrics(torch.cat(preds), labels.cpu())


def evaluate_sharded(
    predict: Callable[[Tensor], Tensor],
    labels: Tensor,
    batch_size: int = 1000,
    desc: str = "eval",
    evaluate_fn: Callable[..., dict[str, Any]] | None = None,
    metrics: Callable[[Tensor, Tensor], dict[str, Any]] = accuracy_metrics,
) -> dict[str, Any]:
    """:func:`evaluate` split over ``torchrun`` ranks: each rank predicts its
    :func:`glimpse.distributed.shard_range` of the split, the predictions are gathered and
    the ``metrics`` computed once on all of them, so they equal a single-process
    evaluation. Every rank must call it; in one process it is ``evaluate_fn`` (default
    :func:`evaluate`) itself."""
    run = evaluate if evaluate_fn is None else evaluate_fn
    extra = () if metrics is accuracy_metrics else (metrics,)  # old-style evaluate_fn too
    if not distributed.active():
        return run(predict, labels, batch_size, desc, *extra)
    mine = distributed.shard_range(labels.shape[0])
    preds: list[Tensor] = []

    def local(idx: Tensor) -> Tensor:
        out = predict(mine[idx])
        preds.append(out.detach().cpu())
        return out

    if mine.numel():
        run(local, labels[mine.to(labels.device)], batch_size, desc, *extra)
    width = preds[0].shape[1:] if preds else labels.shape[1:]
    if not preds and metrics is readout_metrics:
        raise RuntimeError("a rank with no images cannot tell the readouts' width")
    out = torch.cat(preds) if preds else torch.zeros((0, *width), dtype=torch.long)
    out = out.reshape(-1, *width).long()
    return metrics(distributed.all_gather_cat(out), labels.cpu())
