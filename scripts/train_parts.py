"""Train the FCAN-style part-localization agent (Liu et al. 2016):
``python scripts/train_parts.py --help``.

Examples::

    # the 100-class two-digit proxy (MNIST under --data-root), CPU friendly
    python scripts/train_parts.py --dataset proxy --data-root ../shared/data --threads 1

    # CUB-200-2011 (--data-root holds CUB_200_2011/), on a GPU, ImageNet-pretrained ResNet-50
    python scripts/train_parts.py --dataset cub --data-root /data --pretrained --epochs 30

    python scripts/train_parts.py --run-name my-run --resume

Data-parallel on 2 GPUs or 2 CPU processes (``--batch-size`` is per process; see
``glimpse/distributed.py``)::

    torchrun --standalone --nproc_per_node 2 scripts/train_parts.py --data-root ../shared/data
"""

from __future__ import annotations

from agents.parts_train import PartsTrainConfig, train_parts
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(PartsTrainConfig, args, description=__doc__)
    return train_parts(cfg)


if __name__ == "__main__":
    cli_main(main)
