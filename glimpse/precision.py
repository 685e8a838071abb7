"""Training precision (issue 20): fp32, or bfloat16 autocast where the hardware has it.

``--precision bf16`` runs every trainer's forward passes (training updates, validation and
the final report) under ``torch.autocast(dtype=torch.bfloat16)`` on the run's device, with
fp32 master weights and optimiser state (autocast never casts parameters), the backward
pass and the optimiser step outside autocast (:func:`glimpse.loop.apply_gradients`), and
the numerically delicate parts in fp32 where the trainer knows them (the REINFORCE
location log-probabilities and baselines: :mod:`agents.policy`). Convolutional models use
``channels_last`` under bf16 (:mod:`soft_baselines.train`).

bfloat16 only pays where the matrix units support it: CUDA devices with bf16 (Ampere and
later) and CPUs with AVX512-BF16 or AMX (oneDNN's ``_is_mkldnn_bf16_supported``). Elsewhere
the arithmetic would be emulated and slower than fp32, so :func:`resolve_precision` falls
back to fp32 and says so in one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

__all__ = ["PRECISIONS", "Precision", "autocast", "bf16_supported", "resolve_precision"]

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` has native bfloat16 matrix arithmetic (CUDA: compute capability
    with bf16; CPU: oneDNN reports AVX512-BF16 / AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(requested: str, device: torch.device | str, quiet: bool = False) -> str:
    """The precision a run on ``device`` uses for ``requested``: ``bf16`` only where
    :func:`bf16_supported`, else ``fp32`` with a one-line note (unless ``quiet``).
    Raises ``ValueError`` for a name not in :data:`PRECISIONS`."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "bf16" and not bf16_supported(device):
        if not quiet:
            print(
                f"--precision bf16: {torch.device(device)} has no native bfloat16 matrix "
                f"arithmetic (CPU capability {torch.backends.cpu.get_cpu_capability()}); "
                "training in fp32",
                flush=True,
            )
        return "fp32"
    return requested


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """``torch.autocast`` to bfloat16 on ``device`` for ``precision == "bf16"``; a no-op
    for ``fp32``. Does not check support (see :func:`resolve_precision`), so tests can run
    the emulated path on any CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        yield
