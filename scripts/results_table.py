"""Results as data: ``python scripts/results_table.py --help``.

Adds the rows of finished runs (their ``metrics.json``) to ``docs/results.csv`` and
regenerates the results tables in ``docs/RESULTS.md`` and ``README.md`` from it; a run's
``attention/test-best.json`` (``scripts/attention_maps.py RUN``) fills its
``attention_in_box`` and ``attention_on_clutter`` columns. Examples::

    python scripts/results_table.py --runs runs/ram-mnist-random-100 \
        --machine "2-core CPU VM, shared with other jobs"
    # one recipe at three training seeds: one row per protocol, mean ± sd over the seeds
    python scripts/results_table.py --over-seeds --runs runs/stn-s0 runs/stn-s1 runs/stn-s2
    python scripts/results_table.py            # regenerate the tables from the CSV
    python scripts/results_table.py --check    # fail if a table disagrees with the CSV
    # every soft module, one budget: docs/soft_modules.csv and its table in docs/RESULTS.md
    python scripts/results_table.py --sweep --runs runs/every-eca-mnist runs/every-eca-cluttered60
"""

from __future__ import annotations

from glimpse.results import ResultsConfig, update_results
from glimpse.training import cli_main, parse_config
from soft_baselines.registry import list_modules


def main(args: list[str] | None = None) -> list[dict[str, str]]:
    cfg = parse_config(ResultsConfig, args, description=__doc__)
    rows = update_results(cfg, blocks=[m for m in list_modules() if m != "stn"])
    print(f"{len(rows)} result rows", flush=True)
    return rows


if __name__ == "__main__":
    cli_main(main)
