"""Train a soft-attention model with cross-entropy: ``python scripts/train_soft.py --help``.

A SmallCNN with a registered attention block after its last two stages, a spatial
transformer front end (``--module stn``), or plain (``--module none``). Examples::

    python scripts/train_soft.py --module none --data-root ../shared/data
    python scripts/train_soft.py --module stn --dataset cluttered60 --stn-mode attention
    python scripts/train_soft.py --module se --module-kwargs '{"reduction": 8}'
    # plain CNN on the 100-class two-digit proxy of the parts agent (issue 7)
    python scripts/train_soft.py --dataset twodigit100 --module none --data-root ../shared/data
    python scripts/train_soft.py --run-name my-run --resume
    # lowres-cnn: the plain CNN on MNIST area-downsampled to the glimpse agents' 384 pixels
    python scripts/train_soft.py --module none --lowres-pixels 384

Data-parallel on 2 GPUs or 2 CPU processes (``--batch-size`` is per process; see
``glimpse/distributed.py``)::

    torchrun --standalone --nproc_per_node 2 scripts/train_soft.py --data-root ../shared/data
"""

from __future__ import annotations

from typing import Any

from glimpse.training import cli_main, parse_config
from soft_baselines.train import SoftTrainConfig, train_soft


def main(args: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(SoftTrainConfig, args, description=__doc__)
    return train_soft(cfg)


if __name__ == "__main__":
    cli_main(main)
