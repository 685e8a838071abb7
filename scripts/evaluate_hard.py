"""Re-evaluate a trained RAM/DRAM run: ``python scripts/evaluate_hard.py --help``.

The protocol, Monte-Carlo samples and the first fixation are evaluation settings: this
replays the run's best (or last) checkpoint on a split and writes the metrics to
``RUN_DIR/evaluations/``. Examples::

    python scripts/evaluate_hard.py runs/ram-mnist-random-30 --protocol single-sampled
    python scripts/evaluate_hard.py runs/ram-mnist-random-30 --mc-samples 10  # mc10
    python scripts/evaluate_hard.py runs/ram-mnist-random-30 --all-protocols  # val + test
    python scripts/evaluate_hard.py runs/ram-mnist-s0-1700000000 --init-location center --split val
"""

from __future__ import annotations

from typing import Any

from glimpse.experiments.evaluate import EvalConfig, evaluate_run
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(EvalConfig, args, description=__doc__)
    result = evaluate_run(cfg)
    if cfg.all_protocols:
        for label, r in result["protocols"].items():
            print(
                f"{label}: test error {r['test_error']:.2%} ± {r['test_error_std']:.2%}, "
                f"val {r['val_error']:.2%} ± {r['val_error_std']:.2%} "
                f"({len(r['eval_seeds'])} seed(s))",
                flush=True,
            )
        print(f"headline (lower validation error): {result['headline_protocol']}", flush=True)
        return result
    print(
        f"{cfg.split} error {result['error']:.2%} ± {result['error_std']:.2%} over "
        f"{len(result['eval_seeds'])} seed(s) (protocol={result['protocol']}, "
        f"mc_samples={result['mc_samples']}, init_location={result['init_location']})",
        flush=True,
    )
    return result


if __name__ == "__main__":
    cli_main(main)
