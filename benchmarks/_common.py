"""Setup shared by the benchmark scripts."""

from __future__ import annotations

import torch


def setup_device(device: str, threads: int = 0) -> torch.device:
    """Apply ``threads`` (0: torch's default) and return ``device``, checked."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    return dev
