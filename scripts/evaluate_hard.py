"""Re-evaluate a trained RAM/DRAM run: ``python scripts/evaluate_hard.py --help``.

Monte-Carlo evaluation and the first fixation are evaluation settings: this replays the
run's best (or last) checkpoint on a split with other values and writes the metrics to
``RUN_DIR/evaluations/``. Examples::

    python scripts/evaluate_hard.py runs/ram-mnist-random-30 --mc-samples 10
    python scripts/evaluate_hard.py runs/ram-mnist-s0-1700000000 --init-location center --split val
"""

from __future__ import annotations

from agents.evaluate import EvalConfig, evaluate_run
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(EvalConfig, args, description=__doc__)
    result = evaluate_run(cfg)
    print(
        f"{cfg.split} error {result['error']:.2%} (accuracy {result['accuracy']:.4f}; "
        f"mc_samples={result['mc_samples']}, init_location={result['init_location']})",
        flush=True,
    )
    return result


if __name__ == "__main__":
    cli_main(main)
