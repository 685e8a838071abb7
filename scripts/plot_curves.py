"""Learning curves from run folders: ``python scripts/plot_curves.py --help``.

Validation accuracy vs environment steps and vs wall time (PNG) and a Markdown table at
fixed env-step budgets; REINFORCE runs (stepped by episodes) are converted to env steps
(:mod:`glimpse.experiments.curves`). Example::

    python scripts/plot_curves.py --runs runs/reinforce runs/ppo --prefix ppo_mnist
"""

from __future__ import annotations

from glimpse.experiments.curves import CurvesConfig, run_curves
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> str:
    return run_curves(parse_config(CurvesConfig, args, description=__doc__))


if __name__ == "__main__":
    cli_main(main)
