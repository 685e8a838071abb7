"""One evaluation for every model, hard or soft, so the comparison is honest by construction.

A model is evaluated through a ``predict(indices) -> predictions`` function over a split's
dataset indices, visited once each, in order, in batches. Hard agents answer by playing
episodes on those images through the env; soft models by a forward pass. The metrics are
computed here and only here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from glimpse import distributed
from glimpse.training import progress

__all__ = ["accuracy_metrics", "evaluate", "evaluate_sharded"]


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


@torch.no_grad()
def evaluate(
    predict: Callable[[Tensor], Tensor],
    labels: Tensor,
    batch_size: int = 1000,
    desc: str = "eval",
) -> dict[str, float]:
    """Metrics of ``predict`` on every index ``0..N-1`` of a split whose labels are ``labels``.

    ``predict`` receives a CPU long tensor of ``n <= batch_size`` indices and returns their
    predicted labels ``(n,)`` (or ``(n, L)``).
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
    return accuracy_metrics(torch.cat(preds), labels.cpu())


def evaluate_sharded(
    predict: Callable[[Tensor], Tensor],
    labels: Tensor,
    batch_size: int = 1000,
    desc: str = "eval",
    evaluate_fn: Callable[..., dict[str, float]] | None = None,
) -> dict[str, float]:
    """:func:`evaluate` split over ``torchrun`` ranks: each rank predicts its
    :func:`glimpse.distributed.shard_range` of the split, the predictions are gathered and
    the metrics computed once on all of them, so they equal a single-process evaluation.
    Every rank must call it; in one process it is ``evaluate_fn`` (default
    :func:`evaluate`) itself."""
    run = evaluate if evaluate_fn is None else evaluate_fn
    if not distributed.active():
        return run(predict, labels, batch_size, desc)
    mine = distributed.shard_range(labels.shape[0])
    preds: list[Tensor] = []

    def local(idx: Tensor) -> Tensor:
        out = predict(mine[idx])
        preds.append(out.detach().cpu())
        return out

    if mine.numel():
        run(local, labels[mine.to(labels.device)], batch_size, desc)
    tail = labels.shape[1:]
    out = torch.cat(preds) if preds else torch.zeros((0, *tail), dtype=torch.long)
    out = out.reshape(-1, *tail).long()
    return accuracy_metrics(distributed.all_gather_cat(out), labels.cpu())
