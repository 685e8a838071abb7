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

from glimpse.training import progress

__all__ = ["accuracy_metrics", "evaluate"]


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
