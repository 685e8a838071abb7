"""Train RAM (Mnih et al. 2014) with REINFORCE: ``python scripts/train_ram.py --help``.

Defaults: 28x28 MNIST, 6 glimpses of 8x8, 1 scale, a random first fixation, 70 epochs,
one CPU thread (the recipe of issue 16, docs/RESULTS.md); at the end it prints the test
error of every single-trajectory protocol beside the paper's figure. Examples::

    python scripts/train_ram.py --data-root ../shared/data
    python scripts/train_ram.py --task cluttered60 --epochs 100
    # the 100-class two-digit proxy of the parts agent (issue 7): 8 glimpses 12x12, 4 scales
    python scripts/train_ram.py --task twodigit100 --data-root ../shared/data
    python scripts/train_ram.py --run-name my-run --resume
    # the matched controls of issue 17: conv glimpse network, random / grid locations,
    # locations learnt by backpropagation through the retina; readouts trained per glimpse
    python scripts/train_ram.py --agent ram-conv
    python scripts/train_ram.py --agent glimpse-grid --glimpse-net conv
    python scripts/train_ram.py --agent glimpse-soft --per-step-loss --patience 10

Data-parallel on 2 GPUs or 2 CPU processes (``--batch-size`` is per process; see
``glimpse/distributed.py``)::

    torchrun --standalone --nproc_per_node 2 scripts/train_ram.py --data-root ../shared/data
"""

from __future__ import annotations

from agents.config import HardTrainConfig
from agents.train import train_reinforce
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(HardTrainConfig, args, description=__doc__)
    return train_reinforce(cfg)


if __name__ == "__main__":
    cli_main(main)
