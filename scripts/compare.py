"""Hard versus soft attention on the same data: ``python scripts/compare.py --help``.

Trains (or reuses finished runs of) RAM, DRAM, PPO and parts agents (where present and
applicable) and the soft-attention models (plain SmallCNN, STN, every registered block) on
the same splits, evaluates them with the same code, and writes ``results.md``,
``results.csv`` and accuracy-vs-pixels / accuracy-vs-FLOPs plots to the output folder.
Re-running with the same ``--out`` reuses finished runs and resumes unfinished ones.
Examples::

    python scripts/compare.py --quick                       # smoke comparison, a few CPU minutes
    python scripts/compare.py --datasets mnist cluttered60 --seeds 0 1 2
    python scripts/compare.py --methods ram soft-none soft-stn soft-se --datasets mnist
    python scripts/compare.py --methods ram ram-conv glimpse-random glimpse-grid glimpse-soft \
        lowres-cnn
    python scripts/compare.py --merge runs/compare-a runs/compare-b --out runs/compare-ab
"""

from __future__ import annotations

from typing import Any

from glimpse.experiments.compare import (
    CompareConfig,
    format_summary,
    merge_comparisons,
    run_comparison,
)
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> list[dict[str, Any]]:
    cfg = parse_config(CompareConfig, args, description=__doc__)
    if cfg.merge and not cfg.out:
        raise SystemExit("--merge needs --out (the folder for the combined table)")
    rows = merge_comparisons(cfg.merge, cfg.out) if cfg.merge else run_comparison(cfg)
    print(format_summary(rows))
    return rows


if __name__ == "__main__":
    cli_main(main)
