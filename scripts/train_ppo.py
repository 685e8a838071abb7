"""Train a hard-attention agent with PPO: ``python scripts/train_ppo.py --help``.

``--algo ppo-hybrid`` (default): the project's batched PPO on RAM (classification by
backprop, locations by PPO + GAE). ``--algo sb3-recurrent-ppo``: sb3-contrib RecurrentPPO
with an LSTM policy over the glimpse features extractor. Examples::

    python scripts/train_ppo.py --data-root ../shared/data --threads 1
    python scripts/train_ppo.py --algo sb3-recurrent-ppo --total-env-steps 2000000
    python scripts/train_ppo.py --run-name my-run --resume
"""

from __future__ import annotations

from agents.ppo_train import PPOTrainConfig, train_ppo
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(PPOTrainConfig, args, description=__doc__)
    return train_ppo(cfg)


if __name__ == "__main__":
    cli_main(main)
